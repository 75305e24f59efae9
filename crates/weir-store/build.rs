//! Rebuild when a migration file is added or removed: `embed_migrations!` reads the
//! directories at compile time, and cargo only tracks the files it already included.

fn main() {
    println!("cargo::rerun-if-changed=migrations");
}
