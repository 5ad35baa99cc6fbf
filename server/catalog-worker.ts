/** Worker thread of server/catalog-page.ts: renders the products' markup of one `images.json`. */
import { parentPort, workerData } from "node:worker_threads";
import { renderProducts } from "./catalog-render.js";

parentPort?.postMessage(renderProducts(workerData as Uint8Array));
