import type { Catalog, ProductKey, ProductRecord } from "../storage/catalog/catalog.js";
import { LxhubError } from "./errors.js";
import { productTarget } from "./paths.js";
import { toView, type PublishedVersion } from "./publish.js";

/** A product as the API shows it, with its live versions when asked for one product. */
export interface ProductView extends ProductKey {
  releaseTitle: string;
  aliases: string[];
  requirements: Record<string, string>;
}

/**
 * Reads of products and versions for the API: the catalog's records as views, deleted versions
 * left out, NOT_FOUND when a product or a live version does not exist. Writes go through
 * PublishService.
 */
export class ProductService {
  constructor(private readonly catalog: Catalog) {}

  async list(): Promise<ProductView[]> {
    return (await this.catalog.images.listProducts()).map(productView);
  }

  async get(key: ProductKey): Promise<ProductView & { versions: PublishedVersion[] }> {
    const p = await this.record(key);
    const versions = await this.catalog.images.listVersions(p.id);
    return { ...productView(p), versions: versions.map((v) => toView(p, v)) };
  }

  async version(key: ProductKey, name: string): Promise<PublishedVersion> {
    const p = await this.catalog.images.getProduct(key);
    const v = p ? await this.catalog.images.getVersion(p.id, name) : null;
    if (!p || !v || v.deletedAt)
      throw new LxhubError("NOT_FOUND", `no version ${name} of ${productTarget(key)}`);
    return toView(p, v);
  }

  private async record(key: ProductKey): Promise<ProductRecord> {
    const p = await this.catalog.images.getProduct(key);
    if (!p) throw new LxhubError("NOT_FOUND", `no product ${productTarget(key)}`);
    return p;
  }
}

function productView(p: ProductRecord): ProductView {
  const { id: _id, createdAt: _created, updatedAt: _updated, ...view } = p;
  return view;
}
