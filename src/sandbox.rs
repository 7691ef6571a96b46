//! `lm-eval-aas sandbox`: the local backend's confinement of lm_eval with Landlock. Task files are code (a
//! template can run a shell), so lm_eval is confined before it starts: the driver runs
//! `lm-eval-aas sandbox --evaluation-dir DIR -- lm_eval …`, which builds the rules, restricts itself and
//! `exec`s lm_eval; lm_eval and its children inherit the restriction. The driver stays outside, so lm_eval cannot
//! rewrite the files the service trusts (`record.json`, `exit.json`, the log, the driver lock).
//!
//! Landlock only allows, so "read everything but the other evaluations" is granted as: every sibling of each
//! directory on the way from `/` to DIR, except DIR's own siblings (the other evaluations). Besides:
//! - DIR: read; `DIR/output`, `DIR/tmp` (lm_eval's `TMPDIR`) and `DIR/hf` (its `HF_HOME`): read and write;
//! - the shared Hugging Face cache (`HF_HOME`, else `~/.cache/huggingface`): read only. An offline evaluation
//!   reads models and datasets from its hub cache (`HF_HUB_CACHE`); everything lm_eval's libraries write
//!   (prepared datasets, dataset modules, an online evaluation's downloads) goes to `DIR/hf`;
//! - `/dev/shm`: read and write; of `/dev`, only the harmless devices and GPUs (never a raw disk or a terminal);
//! - TCP connections to the service's own ports (`--deny-connect-port`) are refused, to any address
//!   (Landlock ABI 4: network rules allow per port, so every other port is allowed);
//! - signals and abstract Unix sockets reach only processes inside the same sandbox (Landlock ABI 6).
//!
//! No grant may hold or lie inside the evaluations' directory (but DIR): such a grant is dropped, and said so.
//! Without Landlock in the kernel lm_eval runs unconfined, and the evaluation's log says so; with Landlock, rules
//! that cannot be enforced stop lm_eval from starting; a kernel without network rules lets lm_eval reach the
//! service's ports, and the log says that too.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access as _, AccessFs, AccessNet, BitFlags, LandlockStatus, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};
use serde::{Deserialize, Serialize};

/// The Landlock features asked for: file-system rights up to device ioctls (ABI 5) and the signal and abstract
/// socket scopes (ABI 6). On an older kernel the crate enforces what that kernel knows (partially enforced).
const ABI_WANTED: ABI = ABI::V6;

/// The exit code when lm_eval is not started because its confinement failed (as a shell's "cannot execute").
pub const CANNOT_CONFINE: i32 = 126;
const CANNOT_START: i32 = 127;

/// Devices lm_eval may open for reading and writing (and `ioctl`): no disks, no memory, no consoles.
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];
/// Entries of `/dev` that are GPUs (NVIDIA, DRM, AMD KFD): the hardware an evaluation may use.
const GPU_PREFIXES: &[&str] = &["nvidia", "dri", "kfd"];

#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// The evaluation's directory: lm_eval may read it and write its `output/` and `tmp/`, and cannot read its
    /// siblings (the other evaluations).
    #[arg(long, required_unless_present = "probe")]
    pub evaluation_dir: Option<PathBuf>,
    /// lm_eval may not open TCP connections to this port, on any address (the service's own ports).
    #[arg(long = "deny-connect-port", value_name = "PORT")]
    pub deny_connect_ports: Vec<u16>,
    /// Only say (as JSON on standard output) whether this kernel enforces Landlock.
    #[arg(long, conflicts_with = "evaluation_dir")]
    pub probe: bool,
    /// The command to run confined, after `--`.
    #[arg(last = true, required_unless_present = "probe")]
    pub command: Vec<String>,
}

/// What a grant allows beneath its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Read files, list directories, execute.
    Read,
    /// Also create, write, rename and remove (but never make device nodes).
    ReadWrite,
    /// Open a device for reading and writing, and `ioctl` it.
    Device,
    /// List the directory only.
    List,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub path: PathBuf,
    pub right: Right,
}

/// The rules for one evaluation, and what was left out on purpose.
#[derive(Debug, Default)]
pub struct Plan {
    pub grants: Vec<Grant>,
    pub dropped: Vec<String>,
}

/// lm_eval's writable directories inside the evaluation's: its output, `TMPDIR` and `HF_HOME`.
const WRITABLE: [&str; 3] = ["output", "tmp", "hf"];

/// The rules confining lm_eval to the evaluation `dir` (absolute, symlinks resolved).
pub fn plan(dir: &Path) -> Plan {
    let mut grants = Vec::new();
    // Every sibling of each directory on the way from `/` to `dir`, except `dir`'s own siblings.
    for child in dir.ancestors().skip(1) {
        let Some(parent) = child.parent() else { break };
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let path = entry.path();
            if path == child || path == Path::new("/dev") {
                continue;
            }
            // A symlink is granted as what it points to (a dangling or unreadable one is no use to grant).
            if let Ok(path) = std::fs::canonicalize(&path) {
                grants.push(Grant { path, right: Right::Read });
            }
        }
    }
    grants.push(Grant { path: dir.to_path_buf(), right: Right::Read });
    grants.extend(WRITABLE.iter().map(|name| Grant { path: dir.join(name), right: Right::ReadWrite }));
    grants.push(Grant { path: "/dev".into(), right: Right::List });
    grants.extend(DEVICES.iter().map(|device| Grant { path: device.into(), right: Right::Device }));
    grants.push(Grant { path: "/dev/shm".into(), right: Right::ReadWrite });
    for entry in std::fs::read_dir("/dev").into_iter().flatten().flatten() {
        if GPU_PREFIXES.iter().any(|prefix| entry.file_name().to_string_lossy().starts_with(prefix)) {
            grants.push(Grant { path: entry.path(), right: Right::Device });
        }
    }
    // The safety net, whatever symlinks or settings led there: nothing that holds, or lies among, the evaluations.
    let evaluations = dir.parent().unwrap_or(dir);
    let (grants, dropped): (Vec<Grant>, Vec<Grant>) = grants.into_iter().partition(|grant| {
        let resolved = std::fs::canonicalize(&grant.path).unwrap_or_else(|_| grant.path.clone());
        resolved.starts_with(dir) || !(evaluations.starts_with(&resolved) || resolved.starts_with(evaluations))
    });
    let dropped = dropped
        .into_iter()
        .map(|grant| format!("{} (it holds or lies among the evaluations' directories)", grant.path.display()))
        .collect();
    Plan { grants, dropped }
}

/// The shared Hugging Face cache as lm_eval's libraries would find it in this environment: `HF_HOME`, else
/// `$HOME/.cache/huggingface` (the service passes no `XDG_CACHE_HOME`).
pub fn hf_cache(hf_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let hf_home = hf_home.map(PathBuf::from).filter(|p| p.is_absolute());
    hf_home.or_else(|| home.map(|home| PathBuf::from(home).join(".cache/huggingface")).filter(|p| p.is_absolute()))
}

/// Where lm_eval's Hugging Face libraries keep their files in the evaluation `dir`: everything they write goes to
/// `dir/hf`; an offline evaluation reads the hub cache (models, datasets' files) of the `shared` cache.
pub fn hf_environment(dir: &Path, shared: Option<&Path>, offline: bool) -> Vec<(&'static str, PathBuf)> {
    let mut environment = vec![("HF_HOME", dir.join("hf"))];
    if let Some(shared) = shared.filter(|_| offline) {
        environment.push(("HF_HUB_CACHE", shared.join("hub")));
    }
    environment
}

fn rights(right: Right, is_dir: bool) -> BitFlags<AccessFs> {
    let rights = match right {
        Right::Read => AccessFs::from_read(ABI_WANTED),
        Right::ReadWrite => AccessFs::from_all(ABI_WANTED) & !(AccessFs::MakeChar | AccessFs::MakeBlock),
        Right::Device => {
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev | AccessFs::ReadDir
        }
        Right::List => AccessFs::ReadDir.into(),
    };
    if is_dir { rights } else { rights & AccessFs::from_file(ABI_WANTED) }
}

/// Whether Landlock confines this process now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "landlock", rename_all = "snake_case")]
pub enum Confinement {
    /// Enforced with the kernel's Landlock ABI; `partial` when the kernel lacks some of the rights asked for;
    /// `network` when it has network rules (ABI 4), so the service's ports can be refused.
    Enforced {
        abi: String,
        partial: bool,
        #[serde(default)]
        network: bool,
    },
    /// The kernel has no Landlock (not built in, or not enabled at boot).
    Unavailable { why: String },
}

/// Restricts this thread (and what it executes) to `grants`, and refuses TCP connections to `denied_ports`. An
/// error means Landlock is there but the rules could not be put in force.
pub fn restrict_self(grants: &[Grant], denied_ports: &[u16]) -> anyhow::Result<Confinement> {
    let mut ruleset =
        Ruleset::default().handle_access(AccessFs::from_all(ABI_WANTED))?.scope(Scope::from_all(ABI_WANTED))?;
    if !denied_ports.is_empty() {
        ruleset = ruleset.handle_access(AccessNet::ConnectTcp)?;
    }
    let mut ruleset = ruleset.create()?;
    if !denied_ports.is_empty() {
        for port in (1..=u16::MAX).filter(|port| !denied_ports.contains(port)) {
            ruleset = ruleset.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
        }
    }
    for grant in grants {
        let fd = match PathFd::new(&grant.path) {
            Ok(fd) => fd,
            // Gone since it was listed (or never there, like a device this machine lacks): nothing to grant.
            Err(_) if std::fs::symlink_metadata(&grant.path).is_err() => continue,
            Err(e) => return Err(e.into()),
        };
        ruleset = ruleset.add_rule(PathBeneath::new(fd, rights(grant.right, grant.path.is_dir())))?;
    }
    confinement(ruleset.restrict_self()?)
}

fn confinement(status: landlock::RestrictionStatus) -> anyhow::Result<Confinement> {
    let network = ABI::from(status.landlock) >= ABI::V4;
    let abi = match status.landlock {
        LandlockStatus::Available { kernel_abi: Some(abi), .. } => abi.to_string(),
        LandlockStatus::Available { effective_abi, .. } => effective_abi.to_string(),
        LandlockStatus::NotEnabled => {
            return Ok(Confinement::Unavailable {
                why: "the kernel has Landlock but it is not enabled (add `landlock` to the `lsm=` boot parameter)"
                    .into(),
            });
        }
        LandlockStatus::NotImplemented => {
            return Ok(Confinement::Unavailable { why: "the kernel is built without Landlock".into() });
        }
    };
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(Confinement::Enforced { abi, partial: false, network }),
        RulesetStatus::PartiallyEnforced => Ok(Confinement::Enforced { abi, partial: true, network }),
        RulesetStatus::NotEnforced => anyhow::bail!("Landlock ABI {abi} is available but the rules were not enforced"),
    }
}

/// Whether this kernel enforces Landlock, found by restricting this (throwaway) process.
pub fn probe() -> anyhow::Result<Confinement> {
    let ruleset = Ruleset::default().handle_access(AccessFs::Execute)?.create()?;
    confinement(ruleset.restrict_self()?)
}

/// Asks our binary `program` (`sandbox --probe`) whether this kernel enforces Landlock, for the service's start.
pub async fn probe_with(program: &Path) -> anyhow::Result<Confinement> {
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::process::Command::new(program)
            .args(["sandbox", "--probe"])
            .env_clear()
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    if !output.status.success() {
        anyhow::bail!("{} sandbox --probe: {}", program.display(), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// `lm-eval-aas sandbox`: confines itself, then becomes the command (returns only when it cannot).
pub fn run(args: SandboxArgs) -> anyhow::Result<i32> {
    if args.probe {
        println!("{}", serde_json::to_string(&probe()?)?);
        return Ok(0);
    }
    let (Some(dir), Some((program, rest))) = (&args.evaluation_dir, args.command.split_first()) else {
        anyhow::bail!("sandbox: --evaluation-dir and a command after -- are required");
    };
    let say = |line: &str| eprintln!("lm-eval-aas sandbox: {line}");
    let dir = match prepare(dir) {
        Ok(dir) => dir,
        Err(e) => {
            say(&format!("cannot confine lm_eval, not starting it: {e:#}"));
            return Ok(CANNOT_CONFINE);
        }
    };
    let shared_cache = hf_cache(std::env::var_os("HF_HOME"), std::env::var_os("HOME"));
    let offline = std::env::var_os("HF_HUB_OFFLINE").is_some_and(|v| v == "1");
    let hf = hf_environment(&dir, shared_cache.as_deref(), offline);
    let plan = plan(&dir);
    for dropped in &plan.dropped {
        say(&format!("not granted: {dropped}"));
    }
    let ports = args.deny_connect_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    match restrict_self(&plan.grants, &args.deny_connect_ports) {
        Ok(Confinement::Enforced { abi, partial, network }) => {
            let writable: Vec<String> = plan
                .grants
                .iter()
                .filter(|g| g.right == Right::ReadWrite)
                .map(|g| g.path.display().to_string())
                .collect();
            let partially = if partial { " (partially: the kernel lacks some of its rights)" } else { "" };
            say(&format!(
                "lm_eval is confined by Landlock ABI {abi}{partially}: it writes only to {}, and cannot read other evaluations",
                writable.join(", ")
            ));
            if let Some(shared) = &shared_cache {
                say(&format!("the shared Hugging Face cache {} is read-only to it", shared.display()));
            }
            match (ports.is_empty(), network) {
                (true, _) => {}
                (false, true) => say(&format!("it cannot connect to TCP port {ports} (the service's), on any address")),
                (false, false) => say(&format!(
                    "WARNING: this kernel's Landlock has no network rules (ABI 4): lm_eval can connect to the service's port {ports}"
                )),
            }
        }
        Ok(Confinement::Unavailable { why }) => {
            say(&format!("WARNING: Landlock is not available ({why}): lm_eval runs unconfined"));
        }
        Err(e) => {
            say(&format!("cannot confine lm_eval, not starting it: {e:#}"));
            return Ok(CANNOT_CONFINE);
        }
    }
    let error = std::process::Command::new(program).args(rest).env("TMPDIR", dir.join("tmp")).envs(hf).exec();
    say(&format!("cannot start {program}: {error}"));
    Ok(CANNOT_START)
}

/// The evaluation's directory, symlinks resolved, with the directories lm_eval writes to.
fn prepare(dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = std::fs::canonicalize(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    anyhow::ensure!(
        dir.parent().is_some_and(|p| p != Path::new("/")),
        "{} is not inside a directory of evaluations",
        dir.display()
    );
    for writable in WRITABLE {
        std::fs::create_dir_all(dir.join(writable))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `root/data/evaluations/{mine,other}`, `root/data/elsewhere`, and the plan for `mine`.
    fn layout() -> (tempfile::TempDir, PathBuf, Plan) {
        let root = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(root.path()).expect("canonical");
        let evaluations = base.join("data/evaluations");
        for dir in ["mine/output", "other/output"] {
            std::fs::create_dir_all(evaluations.join(dir)).expect("mkdir");
        }
        std::fs::create_dir_all(base.join("data/elsewhere")).expect("mkdir");
        std::fs::create_dir_all(base.join("cache")).expect("mkdir");
        std::os::unix::fs::symlink(evaluations.join("other"), base.join("data/to-other")).expect("symlink");
        std::os::unix::fs::symlink(base.join("data"), base.join("to-data")).expect("symlink");
        let plan = plan(&evaluations.join("mine"));
        (root, base, plan)
    }

    fn access_of(plan: &Plan, path: &Path) -> Vec<Right> {
        plan.grants.iter().filter(|g| g.path == path).map(|g| g.right).collect()
    }

    #[test]
    fn everything_but_the_way_to_the_evaluation_is_readable_and_only_its_own_directories_writable() {
        let (_root, base, plan) = layout();
        let mine = base.join("data/evaluations/mine");
        assert_eq!(access_of(&plan, &base.join("data/elsewhere")), [Right::Read], "a sibling on the way");
        assert_eq!(access_of(&plan, Path::new("/proc")), [Right::Read], "a sibling of the top of the way");
        assert_eq!(access_of(&plan, &mine), [Right::Read]);
        assert_eq!(access_of(&plan, &mine.join("output")), [Right::ReadWrite]);
        assert_eq!(access_of(&plan, &mine.join("tmp")), [Right::ReadWrite]);
        assert_eq!(access_of(&plan, &mine.join("hf")), [Right::ReadWrite]);
        assert_eq!(access_of(&plan, &base.join("cache")), [Right::Read], "a shared cache is read-only");
        assert_eq!(access_of(&plan, Path::new("/dev/null")), [Right::Device]);
        for terminal in ["/dev/tty", "/dev/pts", "/dev/ptmx", "/dev/console"] {
            assert!(access_of(&plan, Path::new(terminal)).is_empty(), "{terminal} is a terminal");
        }
        assert_eq!(access_of(&plan, Path::new("/dev")), [Right::List], "no raw disk is readable");
        for ancestor in mine.ancestors().skip(1) {
            assert!(access_of(&plan, ancestor).is_empty(), "{} holds the other evaluations", ancestor.display());
        }
        let writable: Vec<&Grant> = plan.grants.iter().filter(|g| g.right == Right::ReadWrite).collect();
        assert!(writable.iter().all(|g| g.path.starts_with(&mine) || g.path.starts_with("/dev/shm")), "{writable:?}");
    }

    #[test]
    fn nothing_leads_to_another_evaluation_or_holds_it() {
        let (_root, base, plan) = layout();
        let other = base.join("data/evaluations/other");
        for grant in &plan.grants {
            assert!(!grant.path.starts_with(&other), "{grant:?} reaches the other evaluation");
            assert!(!other.starts_with(&grant.path), "{grant:?} holds the other evaluation");
        }
        assert_eq!(plan.dropped.len(), 2, "the symlinks to it and to data/: {:?}", plan.dropped);
        assert!(plan.dropped.iter().any(|d| d.starts_with(&base.join("data").display().to_string())));
    }

    #[test]
    fn the_hugging_face_cache_follows_hf_home_then_home() {
        assert_eq!(hf_cache(Some("/hf".into()), Some("/home/u".into())), Some(PathBuf::from("/hf")));
        assert_eq!(hf_cache(None, Some("/home/u".into())), Some(PathBuf::from("/home/u/.cache/huggingface")));
        assert_eq!(hf_cache(Some("relative".into()), None), None);
    }

    #[test]
    fn lm_eval_writes_its_own_hugging_face_files_and_reads_the_shared_hub_cache_offline() {
        let (dir, shared) = (Path::new("/data/evaluations/e"), Path::new("/hf"));
        let own = ("HF_HOME", PathBuf::from("/data/evaluations/e/hf"));
        assert_eq!(hf_environment(dir, Some(shared), true), [own.clone(), ("HF_HUB_CACHE", "/hf/hub".into())]);
        assert_eq!(
            hf_environment(dir, Some(shared), false),
            std::slice::from_ref(&own),
            "an online one downloads into its own"
        );
        assert_eq!(hf_environment(dir, None, true), [own]);
    }
}
