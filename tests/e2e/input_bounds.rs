//! Bounded, located input reads (end to end): the manifest, var files and `@PATH` values are read
//! only from regular files, up to a documented size, and text that is not UTF-8 is located.

#[allow(unused_imports)]
use super::*;

use std::time::Duration;

/// A work directory with the seed, whose runs are killed (and the test fails) if one hangs.
fn bounded() -> (Moto, Cli) {
    let (moto, mut cli) = seeded();
    // Not a timing assertion: a read that blocks (a FIFO) or never ends (/dev/zero) is killed here.
    cli.timeout = Duration::from_secs(60);
    (moto, cli)
}

fn mkfifo(cli: &Cli, name: &str) -> String {
    let path = cli.join(name);
    let status = std::process::Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
    path.display().to_string()
}

#[test]
fn a_device_or_a_fifo_is_refused_as_manifest_var_file_or_var_value_without_reading_it() {
    let (_moto, cli) = bounded();
    let fifo = mkfifo(&cli, "pipe");
    for (path, what) in [("/dev/zero", "a character device"), (fifo.as_str(), "a FIFO (named pipe)")] {
        let out = cli.run(&["-f", path, "validate"]);
        out.assert_status(1);
        assert!(out.stderr.contains(&format!("cannot read manifest {path}: it is {what}, not a regular file")), "{out}");

        let out = cli.run(&["-f", SEED, "--var-file", path, "validate"]);
        out.assert_status(1);
        assert!(out.stderr.contains(&format!("{path}:1:1: error: cannot read var file: it is {what}, not a regular file")), "{out}");

        let arg = format!("prefix=@{path}");
        let out = cli.run(&["-f", SEED, "--var", &arg, "validate"]);
        out.assert_status(1);
        assert!(out.stderr.contains(&format!("variable `prefix`: cannot read {path}: it is {what}, not a regular file")), "{out}");
    }
}

#[test]
fn inputs_over_their_limit_are_refused_naming_the_limit() {
    let (_moto, cli) = bounded();
    // A valid TOML comment, just over 4 MiB.
    let big = format!("# {}\n", "x".repeat(4 * 1024 * 1024));
    cli.write_file("big.toml", &big);
    let out = cli.run(&["-f", "big.toml", "validate"]);
    out.assert_status(1);
    assert!(out.stderr.contains("cannot read manifest big.toml: it is larger than the 4 MiB reconcile reads for a manifest"), "{out}");

    let out = cli.run(&["-f", SEED, "--var-file", "big.toml", "validate"]);
    out.assert_status(1);
    assert!(out.stderr.contains("cannot read var file: it is larger than the 1 MiB reconcile reads for a var file"), "{out}");
    let out = cli.run(&["-f", SEED, "--var", "prefix=@big.toml", "validate"]);
    out.assert_status(1);
    assert!(out.stderr.contains("it is larger than the 1 MiB reconcile reads for a `--var name=@FILE` value"), "{out}");
    assert!(!out.combined().contains("xxxxxxxx"), "the file's content is never quoted: {out}");
}

#[test]
fn a_latin1_manifest_and_a_utf16_var_file_get_the_line_and_column_of_the_first_bad_byte() {
    let (_moto, cli) = bounded();
    let seed = std::fs::read_to_string(cli.join(SEED)).unwrap();
    // "café" in Latin-1, in the stack's description (line 9 of the seed).
    let line = seed.lines().position(|l| l.starts_with("description = ")).unwrap() + 1;
    let mut bytes = seed.replacen("description = \"", "description = \"caf\u{e9}", 1).into_bytes();
    let at = bytes.windows(2).position(|w| w == [0xC3, 0xA9]).unwrap();
    bytes.splice(at..at + 2, [0xE9]);
    std::fs::write(cli.join("manifests/latin1.toml"), &bytes).unwrap();
    let out = cli.run(&["-f", "manifests/latin1.toml", "validate"]);
    out.assert_status(1);
    let expected = format!(
        "manifests/latin1.toml:{line}:19: error: not UTF-8 text: it looks like a single-byte encoding such as Latin-1 (ISO-8859-1) or Windows-1252; save it as UTF-8"
    );
    assert!(out.stderr.starts_with(&expected), "`error:` once, at the first bad byte:\n{out}");

    let utf16: Vec<u8> = [0xFF, 0xFE].into_iter().chain("prefix = \"dev-\"\n".encode_utf16().flat_map(u16::to_le_bytes)).collect();
    std::fs::write(cli.join("dev.toml"), utf16).unwrap();
    let out = cli.run(&["-f", SEED, "--var-file", "dev.toml", "validate"]);
    out.assert_status(1);
    assert!(out.stderr.contains("dev.toml:1:1: error: var file: not UTF-8 text: it starts with a UTF-16 byte-order mark"), "{out}");
}
