import js from "@eslint/js";
import tseslint from "typescript-eslint";

/**
 * The floors of docs/architecture.md: arrows point down only, and client/ never reaches into
 * server/ or registry/. Each room lists the rooms it must not import.
 */
const FLOORS = {
  "simplestreams/**": ["signing", "image", "storage", "registry", "server", "client", "cli"],
  "signing/**": ["image", "storage", "registry", "server", "client", "cli"],
  "image/**": ["signing", "storage", "registry", "server", "client", "cli"],
  "storage/**": ["signing", "image", "registry", "server", "client", "cli"],
  "registry/**": ["server", "client", "cli"],
  "server/**": ["client", "cli"],
  "client/**": ["server", "registry", "storage", "cli"],
};
const floorRules = Object.entries(FLOORS).map(([files, banned]) => ({
  files: [files],
  rules: {
    "no-restricted-imports": [
      "error",
      {
        patterns: banned.map((room) => ({
          group: [`../${room}/*`, `../../${room}/*`],
          message: `docs/architecture.md: this room must not import ${room}/ (arrows point down only)`,
        })),
      },
    ],
  },
}));

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", "bench/results/", "coverage/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/no-explicit-any": "error",
    },
  },
  ...floorRules,
  {
    files: ["**/*.mjs", "**/*.js"],
    languageOptions: { globals: { process: "readonly", console: "readonly", URL: "readonly" } },
  },
);
