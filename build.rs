// The web UI is embedded from ui/; rebuild when it changes.
fn main() {
    println!("cargo:rerun-if-changed=ui");
}
