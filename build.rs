//! Build script. The CUDA backend (a later milestone) compiles `kernels/*.cu` here when an
//! `nvcc` is found and embeds checked-in PTX otherwise; today it only declares the inputs
//! and environment it will read, so the crate builds anywhere without a CUDA toolkit.

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
}
