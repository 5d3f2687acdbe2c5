//! Builds the eBPF programs (`befund-ebpf`) for the BPF target with the
//! `befund-bpf` toolchain that `cargo xtask setup` links, and leaves the object
//! in `OUT_DIR` for `include_bytes_aligned!`.

const TOOLCHAIN: &str = "befund-bpf";

fn main() -> anyhow::Result<()> {
    // Only aya_ebpf may use its unstable feature; Debian's prebuilt `core`
    // for the BPF target means no -Z build-std is needed.
    // The nested cargo's progress lines would each become a build warning.
    // SAFETY: build scripts are single-threaded.
    unsafe {
        std::env::set_var("RUSTC_BOOTSTRAP", "aya_ebpf");
        std::env::set_var("CARGO_TERM_QUIET", "true");
    }
    println!("cargo:rerun-if-changed=../befund-common/src");

    let package = aya_build::Package {
        name: "befund-ebpf",
        root_dir: "../befund-ebpf",
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(TOOLCHAIN)).map_err(|e| {
        anyhow::anyhow!(
            "failed to build the eBPF filter with the `{TOOLCHAIN}` toolchain \
             (run `cargo xtask setup` once as root to install it): {e:#}"
        )
    })
}
