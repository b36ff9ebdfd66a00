//! Embeds the built-in detection pack (`rules/**/*.yml` and the test events beside them, at the workspace
//! root) into the binary, so `trailwatch` needs no files beside it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yml" | "yaml" | "json")) {
            out.push(path);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let rules = manifest.join("../../rules");
    println!("cargo:rerun-if-changed={}", rules.display());
    let mut files = Vec::new();
    collect(&rules, &mut files);
    files.sort();
    let mut code =
        String::from("/// The built-in pack: (path under rules/, text): rule files and their test events.\npub const BUILTIN: &[(&str, &str)] = &[\n");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
        let relative = file.strip_prefix(&rules).expect("under rules/").to_string_lossy().replace('\\', "/");
        let absolute = file.canonicalize().expect("a rule file that was just listed");
        writeln!(code, "    ({:?}, include_str!({:?})),", format!("rules/{relative}"), absolute.display().to_string()).expect("writing to a String");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("builtin_rules.rs");
    std::fs::write(out, code).expect("writing builtin_rules.rs");
}
