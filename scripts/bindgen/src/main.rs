//! `site-bindgen INPUT.wasm OUT_DIR NAME`: what `wasm-bindgen --target web --no-typescript
//! --out-name NAME --out-dir OUT_DIR INPUT.wasm` does, for scripts/build.sh.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, out_dir, name] = args.as_slice() else {
        eprintln!("usage: site-bindgen INPUT.wasm OUT_DIR NAME");
        return ExitCode::from(2);
    };
    let mut bindgen = wasm_bindgen_cli_support::Bindgen::new();
    bindgen.input_path(input).out_name(name).typescript(false);
    let result = bindgen.web(true).and_then(|b| b.generate(out_dir));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("site-bindgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}
