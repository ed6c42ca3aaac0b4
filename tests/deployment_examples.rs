//! The deployment guide's example configurations are valid (`ftpbridge
//! check` accepts each), the guide links every one of them, and `proxy.toml`
//! documents every data-channel and PROXY protocol key.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::pki::TestPki;

const BIN: &str = env!("CARGO_BIN_EXE_ftpbridge");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("docs/examples"))
        .expect("docs/examples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_passes_ftpbridge_check() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let files = examples();
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut check = Command::new(BIN);
        check.args(["check", "--config"]).arg(&file);
        // Certificate paths point to where a real host keeps them; here they
        // are replaced with generated files, through the documented
        // environment overrides.
        if text.contains("tls_cert") {
            check
                .env("FTPBRIDGE__LISTENERS__0__TLS_CERT", &pki.server_cert)
                .env("FTPBRIDGE__LISTENERS__0__TLS_KEY", &pki.server_key);
        }
        let output = check.output().unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_guide_links_every_example() {
    let guide = std::fs::read_to_string(repo("docs/deployment.md")).unwrap();
    for file in examples() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            guide.contains(&format!("(examples/{name})")),
            "docs/deployment.md does not link {name}"
        );
    }
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    assert!(
        readme.contains("docs/deployment.md"),
        "the README links the guide"
    );
}

#[test]
fn proxy_toml_documents_the_data_channel_and_proxy_protocol_keys() {
    let text = std::fs::read_to_string(repo("proxy.toml")).unwrap();
    for key in [
        "passive_address",
        "passive_address_ttl",
        "passive_address_overrides",
        "passive_ports",
        "data_source",
        "data_source_cidrs",
        "proxy_protocol",
        "trusted_proxies",
        "proxy_header_timeout",
    ] {
        assert!(
            text.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{key} ="))
            }),
            "proxy.toml has no `{key} = ...` line"
        );
    }
}
