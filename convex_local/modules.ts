/**
 * Loads a Convex functions directory the way `import.meta.glob` would hand it
 * to convex-test: a map from file path to a lazy `import()`.
 *
 * convex-test finds the functions root by looking for a key containing
 * `_generated` and strips everything up to it, so a function path like
 * `assets:applyEvents` resolves to `<root>/assets` (extension removed).
 */
import { readdirSync, statSync, existsSync } from "node:fs";
import { join, relative, resolve, sep } from "node:path";
import { pathToFileURL } from "node:url";

export type ModuleLoader = () => Promise<Record<string, unknown>>;

export interface FunctionsDir {
  root: string;
  /** Absolute path → lazy import, as `import.meta.glob` would produce. */
  modules: Record<string, ModuleLoader>;
  /** Module paths relative to root without extension ("assets", "lib/x"). */
  modulePaths: string[];
}

const SOURCE = /\.(ts|js|mts|mjs|tsx|jsx)$/;
const SKIP = /(\.d\.ts|\.test\.[jt]sx?|\.spec\.[jt]sx?)$/;

export function discoverFunctions(dir: string): FunctionsDir {
  const root = resolve(dir);
  if (!existsSync(root) || !statSync(root).isDirectory()) {
    throw new Error(`functions directory ${root} does not exist`);
  }
  const modules: Record<string, ModuleLoader> = {};
  const modulePaths: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const full = join(d, name);
      if (statSync(full).isDirectory()) {
        if (name === "node_modules" || name.startsWith(".")) continue;
        walk(full);
      } else if (SOURCE.test(name) && !SKIP.test(name)) {
        const url = pathToFileURL(full).href;
        // convex-test calls the loader on every function call; an `import()`
        // of a loaded module still crosses to the loader-hooks thread under
        // tsx (~1 ms), so keep the promise.
        let loaded: Promise<Record<string, unknown>> | undefined;
        modules[full] = () => (loaded ??= import(url));
        modulePaths.push(relative(root, full).split(sep).join("/").replace(SOURCE, ""));
      }
    }
  };
  walk(root);
  if (!Object.keys(modules).some((p) => p.includes("_generated"))) {
    // convex-test only uses a `_generated` key to find the root; functions
    // that import ./_generated/server will fail on their own if it's missing.
    const marker = join(root, "_generated", "__root_marker__.js");
    modules[marker] = () => Promise.resolve({});
  }
  return { root, modules, modulePaths };
}

/** The schema module's default export, or undefined when there is none. */
export async function loadSchema(fns: FunctionsDir): Promise<unknown> {
  const entry = Object.entries(fns.modules).find(([p]) =>
    /^schema\.(ts|js|mts|mjs)$/.test(relative(fns.root, p)),
  );
  if (entry === undefined) return undefined;
  const mod = await entry[1]();
  return mod.default;
}
