/**
 * The simplestreams room: the protocol model, the document builder, strict parsers of upstream
 * documents, image listing and alias resolution as LXD/Incus do it, architecture names and version
 * keys (shared/docs/simplestreams.md). Pure: no network, disk or database.
 */
export * from "./types.js";
export * from "./errors.js";
export { CANONICAL_ARCHES, canonicalArch, isKnownArch, personalities, distroArch, hostArch } from "./arch.js";
export {
  MAX_VERSION_KEY_LENGTH,
  versionDate,
  isValidVersionKey,
  versionFromDate,
  compareVersionKeys,
  compareBytewise,
} from "./version.js";
export {
  NAMES,
  type NameKind,
  type NameRule,
  nameProblem,
  isName,
  textProblem,
  hasControl,
  TEXT_LIMITS,
  MAX_ALIASES,
  MAX_REQUIREMENTS,
  DIGEST_PATTERN,
} from "./names.js";
export { canonicalJson, type JsonValue } from "./json.js";
export {
  INDEX_PATH,
  DEFAULT_PRODUCTS_PATH,
  DEFAULT_CONTENT_ID,
  INDEX_FORMAT,
  PRODUCTS_FORMAT,
  IMAGE_DOWNLOADS,
  ROOT_ITEM_KEYS,
  deltaItemKey,
  rfc2822,
  buildDocuments,
} from "./builder.js";
export {
  DELTA_TARGETS,
  type DeltaFtype,
  imageTypeOfRoot,
  productKey,
  isSafeRelativePath,
  checkProductFields,
  checkAliases,
  checkRequirements,
  checkVersionShape,
  checkVersion,
  validateStream,
  type FileShape,
  type ValidateOptions,
} from "./validate.js";
export { decodeJson, parseIndex, parseProducts, imageDownloadEntries } from "./parse.js";
export {
  type ListOptions,
  type ResolveOptions,
  fingerprintFromMeta,
  listImages,
  shownAliases,
  resolveAlias,
} from "./images.js";
export {
  type PickedFile,
  type SkippedItem,
  type VersionFiles,
  type ProductFields,
  versionFiles,
  productFields,
} from "./upstream.js";
