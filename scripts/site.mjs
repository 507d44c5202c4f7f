// Finishes the release site after wasm-bindgen and wasm-opt, as cargo-leptos's release build
// does: the stylesheet and public/ copied in, content hashes in the /pkg/ file names (listed in
// the hash file the server reads beside its binary), and brotli + gzip copies of every file for
// the precompressed file service. Node's own zlib does the compression, so nothing is installed.
//
//   node scripts/site.mjs SITE_ROOT PKG_DIR OUTPUT_NAME STYLE_FILE ASSETS_DIR HASH_FILE
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";

const [siteRoot, pkgDir, name, styleFile, assetsDir, hashFile] = process.argv.slice(2);
if (!hashFile) {
  console.error("usage: site.mjs SITE_ROOT PKG_DIR OUTPUT_NAME STYLE_FILE ASSETS_DIR HASH_FILE");
  process.exit(2);
}
const pkg = path.join(siteRoot, pkgDir);

fs.cpSync(assetsDir, siteRoot, { recursive: true });
fs.copyFileSync(styleFile, path.join(pkg, `${name}.css`));

// The same hash as cargo-leptos (MD5, base64url without padding), so a site built either way
// names its files alike; the hash only has to change with the content.
const hashOf = (file) => createHash("md5").update(fs.readFileSync(file)).digest("base64url");
const hashes = {};
for (const ext of ["js", "wasm", "css"]) {
  const plain = path.join(pkg, `${name}.${ext}`);
  hashes[ext] = hashOf(plain);
  fs.renameSync(plain, path.join(pkg, `${name}.${hashes[ext]}.${ext}`));
}
fs.mkdirSync(path.dirname(hashFile), { recursive: true });
fs.writeFileSync(hashFile, `js: ${hashes.js}\nwasm: ${hashes.wasm}\ncss: ${hashes.css}\n`);

// Every file gets both copies: the file service picks one by the request's Accept-Encoding.
const files = (dir) =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? files(p) : /\.(br|gz)$/.test(p) ? [] : [p];
  });
for (const file of files(siteRoot)) {
  const data = fs.readFileSync(file);
  fs.writeFileSync(
    `${file}.br`,
    zlib.brotliCompressSync(data, {
      params: {
        [zlib.constants.BROTLI_PARAM_QUALITY]: zlib.constants.BROTLI_MAX_QUALITY,
        [zlib.constants.BROTLI_PARAM_SIZE_HINT]: data.length,
      },
    }),
  );
  fs.writeFileSync(`${file}.gz`, zlib.gzipSync(data, { level: 9 }));
}
console.log(`site: ${Object.entries(hashes).map(([k, v]) => `${name}.${v}.${k}`).join(", ")}`);
