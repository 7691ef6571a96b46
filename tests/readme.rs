//! The README stays true to the binary: its configuration table names every `serve` flag and variable.

#[test]
fn the_configuration_table_names_every_serve_flag() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_lm-eval-aas"))
        .args(["serve", "--help"])
        .output()
        .expect("lm-eval-aas serve --help");
    let help = String::from_utf8(help.stdout).expect("utf8");
    let readme = include_str!("../README.md");
    let table: Vec<&str> = readme.lines().filter(|line| line.starts_with("| `--")).collect();
    let variables: Vec<&str> = help.split("[env: ").skip(1).filter_map(|rest| rest.split(['=', ']']).next()).collect();
    assert!(variables.len() > 20, "read the variables off --help: {help}");
    for variable in variables {
        assert!(table.iter().any(|row| row.contains(&format!("`{variable}`"))), "README's table lacks {variable}");
    }
    for flag in help.lines().filter_map(|line| line.trim_start().strip_prefix("--")?.split([' ', '=', '<']).next()) {
        if flag == "help" {
            continue;
        }
        assert!(table.iter().any(|row| row.starts_with(&format!("| `--{flag}`"))), "README's table lacks --{flag}");
    }
}
