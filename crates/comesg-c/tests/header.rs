//! `include/comesg.h` is what cbindgen makes of this crate today. When the
//! API changes, regenerate it with
//! `COMESG_BLESS=1 cargo test -p comesg-c --test header`.

use std::path::Path;

#[test]
fn the_checked_in_header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen failed on the crate")
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = dir.join("include/comesg.h");
    if std::env::var_os("COMESG_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "include/comesg.h is out of date: run COMESG_BLESS=1 cargo test -p comesg-c --test header"
    );
}
