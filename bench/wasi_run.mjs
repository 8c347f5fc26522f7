// Runs a wasm32-wasip1 command under Node's WASI (V8, the engine Envoy uses for wasm filters).
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import { argv } from "node:process";

// The file system is the caller's (the bench passes absolute paths, e.g. a config file).
const wasi = new WASI({ version: "preview1", args: argv.slice(2), env: {}, preopens: { "/": "/" }, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(argv[2]));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
