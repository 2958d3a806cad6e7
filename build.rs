//! Build script: gives the CUDA backend its kernels, and never fails for lack of CUDA.
//!
//! - With an `nvcc` (found by `cc`: `NVCC`, `CUDA_HOME`/`CUDA_PATH`, or `PATH`), each
//!   `kernels/*.cu` becomes a fatbin with SASS for every `CUDA_COMPUTE_CAP` (default
//!   `80,90`) plus `compute_80` PTX for newer devices.
//! - Without one (or when nvcc fails, or under `DOCS_RS`), the checked-in images are
//!   embedded: the sm_80 and sm_90 cubins from `kernels/cubin/` (PyPI's ptxas), which
//!   such devices load as they are, and the PTX from `kernels/ptx/` (NVRTC 12.0,
//!   `compute_80`), which the driver compiles at load time for any other device.
//!   `scripts/kernels.py` regenerates both, and CI checks that they match the sources.
//!
//! Either way `OUT_DIR/kernels.rs` lists the images (`KERNEL_IMAGES`, for
//! `include_bytes!`) and how they were built (`KERNEL_BUILD`).
//!
//! On Linux it also builds the driver guard (`kernels/guard`, see `src/cuda/guard.rs`)
//! with the C compiler that links the crate, into `OUT_DIR/driver_guard.rs`
//! (`DRIVER_GUARD`: the library's bytes, empty where it could not be built).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const KERNELS: [&str; 6] = ["filter", "fused", "int8", "norms", "score", "topk"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "CUDA_COMPUTE_CAP",
        "DOCS_RS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = out.join("kernels");
    std::fs::create_dir_all(&dir).expect("create OUT_DIR/kernels");
    let nvcc = if std::env::var_os("DOCS_RS").is_some() {
        None
    } else {
        find_nvcc()
    };
    let caps = compute_caps();
    let mut listing = String::from("/// Every embedded kernel image, in no order.\n");
    listing.push_str("pub(crate) const KERNEL_IMAGES: &[KernelImage] = &[\n");
    let mut how = "checked-in sm_80/sm_90 cubins (ptxas) and PTX (NVRTC 12.0, compute_80)";
    let mut image = |module: &str, form: &str, path: &Path| {
        writeln!(
            listing,
            "    KernelImage {{ module: {module:?}, form: {form}, bytes: include_bytes!({:?}) }},",
            path.display().to_string()
        )
        .unwrap();
    };
    let mut fatbins = String::new();
    for name in KERNELS {
        let src = Path::new("kernels").join(format!("{name}.cu"));
        let fatbin = dir.join(format!("{name}.fatbin"));
        let built = nvcc
            .as_ref()
            .is_some_and(|nvcc| compile_fatbin(nvcc, &src, &fatbin, &caps));
        if built {
            fatbins = format!("nvcc fatbin for sm_{}", caps.join(", sm_"));
            image(name, "ImageForm::Fatbin", &fatbin);
            continue;
        }
        for cap in ["80", "90"] {
            let cubin = Path::new("kernels/cubin").join(format!("{name}.sm_{cap}.cubin"));
            let cubin = std::fs::canonicalize(&cubin).expect("kernels/cubin/*.cubin is checked in");
            image(name, &format!("ImageForm::Cubin({cap})"), &cubin);
        }
        // NUL-terminated: the driver reads PTX text as a C string.
        let mut ptx = std::fs::read(Path::new("kernels/ptx").join(format!("{name}.ptx")))
            .expect("kernels/ptx/*.ptx is checked in");
        ptx.push(0);
        let path = dir.join(format!("{name}.ptx"));
        std::fs::write(&path, ptx).expect("write PTX to OUT_DIR");
        image(name, "ImageForm::Ptx", &path);
    }
    if !fatbins.is_empty() {
        how = &fatbins;
    }
    listing.push_str("];\n");
    writeln!(
        listing,
        "/// How the kernels were built.\npub(crate) const KERNEL_BUILD: &str = {how:?};"
    )
    .unwrap();
    std::fs::write(out.join("kernels.rs"), listing).expect("write kernels.rs");
    build_driver_guard(&out);
}

/// Builds `kernels/guard/driver_guard.c` into a library whose soname is `libcuda.so` and
/// which needs `libcuda.so.1` (linked against an empty stand-in of that name, so no
/// driver is needed here), and writes `OUT_DIR/driver_guard.rs`. Without a C compiler, or
/// off Linux, the guard is empty and hybridvec loads the driver directly.
fn build_driver_guard(out: &Path) {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let lib = out.join("driver_guard.so");
    let built = target_os == "linux"
        && std::env::var_os("DOCS_RS").is_none()
        && compile_driver_guard(out, &lib)
            .map_err(|e| println!("cargo:warning=driver guard not built ({e}); CUDA result codes newer than the bindings are then undefined behaviour in cudarc"))
            .is_ok();
    let bytes = if built {
        format!("include_bytes!({:?})", lib.display().to_string())
    } else {
        "&[]".to_string()
    };
    std::fs::write(
        out.join("driver_guard.rs"),
        format!("/// The driver guard's shared library (empty: not built).\npub(crate) const DRIVER_GUARD: &[u8] = {bytes};\n"),
    )
    .expect("write driver_guard.rs");
}

fn compile_driver_guard(out: &Path, lib: &Path) -> Result<(), String> {
    let cc = cc::Build::new()
        .cargo_metadata(false)
        .cargo_warnings(false)
        .try_get_compiler()
        .map_err(|e| e.to_string())?;
    let run = |cmd: &mut Command| -> Result<(), String> {
        let o = cmd
            .output()
            .map_err(|e| format!("{}: {e}", cc.path().display()))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .to_string())
        }
    };
    let stub_dir = out.join("guard-stub");
    std::fs::create_dir_all(&stub_dir).map_err(|e| e.to_string())?;
    let empty = stub_dir.join("empty.c");
    std::fs::write(&empty, "").map_err(|e| e.to_string())?;
    let stub = stub_dir.join("libcuda.so.1");
    run(cc
        .to_command()
        .args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(&stub)
        .arg(&empty))?;
    run(cc
        .to_command()
        .args([
            "-std=c11",
            "-O2",
            "-g0",
            "-Wall",
            "-shared",
            "-fPIC",
            "-Wl,-soname,libcuda.so",
        ])
        .arg("-o")
        .arg(lib)
        .arg("kernels/guard/driver_guard.c")
        .arg("-Wl,--no-as-needed")
        .arg(&stub)
        .arg("-ldl"))
}

/// nvcc as `cc` finds it, if it runs.
fn find_nvcc() -> Option<PathBuf> {
    let tool = cc::Build::new()
        .cuda(true)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .try_get_compiler()
        .ok()?;
    let path = tool.path().to_path_buf();
    let ok = Command::new(&path)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(path)
}

/// `CUDA_COMPUTE_CAP` ("80,90" or "90"), default sm_80 and sm_90.
fn compute_caps() -> Vec<String> {
    let caps: Vec<String> = std::env::var("CUDA_COMPUTE_CAP")
        .unwrap_or_else(|_| "80,90".into())
        .split(',')
        .map(|c| c.trim().replace('.', ""))
        .filter(|c| !c.is_empty() && c.chars().all(|d| d.is_ascii_digit()))
        .collect();
    if caps.is_empty() {
        vec!["80".into(), "90".into()]
    } else {
        caps
    }
}

fn compile_fatbin(nvcc: &Path, src: &Path, out: &Path, caps: &[String]) -> bool {
    let mut cmd = Command::new(nvcc);
    cmd.args(["--fatbin", "-O3", "-std=c++17", "-lineinfo", "-Ikernels"]);
    for cap in caps {
        cmd.arg(format!("-gencode=arch=compute_{cap},code=sm_{cap}"));
    }
    cmd.arg("-gencode=arch=compute_80,code=compute_80");
    cmd.arg("-o").arg(out).arg(src);
    match cmd.output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            println!(
                "cargo:warning=nvcc failed on {} (using checked-in PTX): {}",
                src.display(),
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
            );
            false
        }
        Err(_) => false,
    }
}
