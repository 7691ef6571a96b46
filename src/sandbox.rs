//! `lm-eval-aas sandbox`: the local backend's confinement of lm_eval with Landlock. Task files are code (a
//! template can run a shell), so lm_eval is confined before it starts: the driver runs
//! `lm-eval-aas sandbox --evaluation-dir DIR -- lm_eval …`, which builds the rules, restricts itself and
//! `exec`s lm_eval; lm_eval and its children inherit the restriction. The driver stays outside, so lm_eval cannot
//! rewrite the files the service trusts (`record.json`, `exit.json`, the log).
//!
//! Landlock only allows, so "read everything but the other evaluations" is granted as: every sibling of each
//! directory on the way from `/` to DIR, except DIR's own siblings (the other evaluations). Besides:
//! - DIR: read; `DIR/output` and `DIR/tmp` (lm_eval's `TMPDIR`): read and write;
//! - the Hugging Face cache (`HF_HOME`, else `~/.cache/huggingface`) and `/dev/shm`: read and write;
//! - of `/dev`, only the harmless devices and GPUs (never a raw disk);
//! - signals and abstract Unix sockets reach only processes inside the same sandbox (Landlock ABI 6).
//!
//! No grant may hold or lie inside the evaluations' directory (but DIR): such a grant is dropped, and said so.
//! Without Landlock in the kernel lm_eval runs unconfined, and the evaluation's log says so; with Landlock, rules
//! that cannot be enforced stop lm_eval from starting.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access as _, AccessFs, BitFlags, LandlockStatus, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};
use serde::{Deserialize, Serialize};

/// The Landlock features asked for: file-system rights up to device ioctls (ABI 5) and the signal and abstract
/// socket scopes (ABI 6). On an older kernel the crate enforces what that kernel knows (partially enforced).
const ABI_WANTED: ABI = ABI::V6;

/// The exit code when lm_eval is not started because its confinement failed (as a shell's "cannot execute").
pub const CANNOT_CONFINE: i32 = 126;
const CANNOT_START: i32 = 127;

/// Devices lm_eval may open for reading and writing (and `ioctl`): no disks, no memory, no consoles.
const DEVICES: &[&str] =
    &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx"];
/// Entries of `/dev` that are GPUs (NVIDIA, DRM, AMD KFD): the hardware an evaluation may use.
const GPU_PREFIXES: &[&str] = &["nvidia", "dri", "kfd"];

#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// The evaluation's directory: lm_eval may read it and write its `output/` and `tmp/`, and cannot read its
    /// siblings (the other evaluations).
    #[arg(long, required_unless_present = "probe")]
    pub evaluation_dir: Option<PathBuf>,
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

/// The rules confining lm_eval to the evaluation `dir` (absolute, symlinks resolved), given the writable caches.
pub fn plan(dir: &Path, caches: &[PathBuf]) -> Plan {
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
    for writable in ["output", "tmp"] {
        grants.push(Grant { path: dir.join(writable), right: Right::ReadWrite });
    }
    grants.extend(caches.iter().map(|path| Grant { path: path.clone(), right: Right::ReadWrite }));
    grants.push(Grant { path: "/dev".into(), right: Right::List });
    grants.extend(DEVICES.iter().map(|device| Grant { path: device.into(), right: Right::Device }));
    grants.push(Grant { path: "/dev/pts".into(), right: Right::Device });
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

/// The Hugging Face cache as lm_eval's libraries find it in this environment: `HF_HOME`, else
/// `$HOME/.cache/huggingface` (the service passes no `XDG_CACHE_HOME`).
pub fn hf_cache(hf_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let hf_home = hf_home.map(PathBuf::from).filter(|p| p.is_absolute());
    hf_home.or_else(|| home.map(|home| PathBuf::from(home).join(".cache/huggingface")).filter(|p| p.is_absolute()))
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
    /// Enforced with the kernel's Landlock ABI; `partial` when the kernel lacks some of the rights asked for.
    Enforced { abi: String, partial: bool },
    /// The kernel has no Landlock (not built in, or not enabled at boot).
    Unavailable { why: String },
}

/// Restricts this thread (and what it executes) to `grants`. An error means Landlock is there but the rules
/// could not be put in force.
pub fn restrict_self(grants: &[Grant]) -> anyhow::Result<Confinement> {
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_WANTED))?
        .scope(Scope::from_all(ABI_WANTED))?
        .create()?;
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
        RulesetStatus::FullyEnforced => Ok(Confinement::Enforced { abi, partial: false }),
        RulesetStatus::PartiallyEnforced => Ok(Confinement::Enforced { abi, partial: true }),
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
    let tmp = dir.join("tmp");
    let mut caches = Vec::new();
    if let Some(cache) = hf_cache(std::env::var_os("HF_HOME"), std::env::var_os("HOME")) {
        match std::fs::create_dir_all(&cache).and_then(|()| std::fs::canonicalize(&cache)) {
            Ok(cache) => caches.push(cache),
            Err(e) => say(&format!("the Hugging Face cache {} is not writable ({e})", cache.display())),
        }
    }
    let plan = plan(&dir, &caches);
    for dropped in &plan.dropped {
        say(&format!("not granted: {dropped}"));
    }
    match restrict_self(&plan.grants) {
        Ok(Confinement::Enforced { abi, partial }) => {
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
        }
        Ok(Confinement::Unavailable { why }) => {
            say(&format!("WARNING: Landlock is not available ({why}): lm_eval runs unconfined"));
        }
        Err(e) => {
            say(&format!("cannot confine lm_eval, not starting it: {e:#}"));
            return Ok(CANNOT_CONFINE);
        }
    }
    let error = std::process::Command::new(program).args(rest).env("TMPDIR", &tmp).exec();
    say(&format!("cannot start {program}: {error}"));
    Ok(CANNOT_START)
}

/// The evaluation's directory, symlinks resolved, with the `output/` and `tmp/` lm_eval writes to.
fn prepare(dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = std::fs::canonicalize(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    anyhow::ensure!(
        dir.parent().is_some_and(|p| p != Path::new("/")),
        "{} is not inside a directory of evaluations",
        dir.display()
    );
    for writable in ["output", "tmp"] {
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
        let caches = [base.join("cache"), evaluations.join("other"), base.join("data")];
        let plan = plan(&evaluations.join("mine"), &caches);
        (root, base, plan)
    }

    fn access_of(plan: &Plan, path: &Path) -> Vec<Right> {
        plan.grants.iter().filter(|g| g.path == path).map(|g| g.right).collect()
    }

    #[test]
    fn everything_but_the_way_to_the_evaluation_is_readable_and_only_its_output_tmp_and_caches_writable() {
        let (_root, base, plan) = layout();
        let mine = base.join("data/evaluations/mine");
        assert_eq!(access_of(&plan, &base.join("data/elsewhere")), [Right::Read], "a sibling on the way");
        assert_eq!(access_of(&plan, Path::new("/proc")), [Right::Read], "a sibling of the top of the way");
        assert_eq!(access_of(&plan, &mine), [Right::Read]);
        assert_eq!(access_of(&plan, &mine.join("output")), [Right::ReadWrite]);
        assert_eq!(access_of(&plan, &mine.join("tmp")), [Right::ReadWrite]);
        assert!(
            access_of(&plan, &base.join("cache")).contains(&Right::ReadWrite),
            "a cache, also a sibling on the way"
        );
        assert_eq!(access_of(&plan, Path::new("/dev/null")), [Right::Device]);
        assert_eq!(access_of(&plan, Path::new("/dev")), [Right::List], "no raw disk is readable");
        for ancestor in mine.ancestors().skip(1) {
            assert!(access_of(&plan, ancestor).is_empty(), "{} holds the other evaluations", ancestor.display());
        }
        let writable: Vec<&Grant> = plan.grants.iter().filter(|g| g.right == Right::ReadWrite).collect();
        assert!(
            writable
                .iter()
                .all(|g| g.path.starts_with(&mine) || g.path == base.join("cache") || g.path.starts_with("/dev/shm")),
            "{writable:?}"
        );
    }

    #[test]
    fn nothing_leads_to_another_evaluation_or_holds_it() {
        let (_root, base, plan) = layout();
        let other = base.join("data/evaluations/other");
        for grant in &plan.grants {
            assert!(!grant.path.starts_with(&other), "{grant:?} reaches the other evaluation");
            assert!(!other.starts_with(&grant.path), "{grant:?} holds the other evaluation");
        }
        assert_eq!(plan.dropped.len(), 4, "the symlinks to it and to data/, the two caches: {:?}", plan.dropped);
        assert!(plan.dropped.iter().any(|d| d.starts_with(&base.join("data").display().to_string())));
    }

    #[test]
    fn the_hugging_face_cache_follows_hf_home_then_home() {
        assert_eq!(hf_cache(Some("/hf".into()), Some("/home/u".into())), Some(PathBuf::from("/hf")));
        assert_eq!(hf_cache(None, Some("/home/u".into())), Some(PathBuf::from("/home/u/.cache/huggingface")));
        assert_eq!(hf_cache(Some("relative".into()), None), None);
    }
}
