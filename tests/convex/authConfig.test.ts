/**
 * `convex/auth.config.ts`: one customJwt provider from the deployment's
 * environment, or none; a half configuration fails loudly.
 */
import { afterEach, describe, expect, test, vi } from "vitest";
import { authProvidersFrom } from "../../convex/model/authConfig";

afterEach(() => {
  vi.unstubAllEnvs();
  vi.resetModules();
});

const CLERK = {
  AUTH_ISSUER: "https://clerk.example.com",
  AUTH_JWKS: "https://clerk.example.com/.well-known/jwks.json",
  AUTH_APPLICATION_ID: "convex",
};

describe("authProvidersFrom", () => {
  test("nothing set: no provider (the internal functions keep working with the deploy key)", () => {
    expect(authProvidersFrom({})).toEqual([]);
    expect(authProvidersFrom({ AUTH_ISSUER: " " })).toEqual([]);
  });

  test("a customJwt provider from the variables, RS256 by default", () => {
    expect(authProvidersFrom(CLERK)).toEqual([
      {
        type: "customJwt",
        issuer: "https://clerk.example.com",
        jwks: "https://clerk.example.com/.well-known/jwks.json",
        algorithm: "RS256",
        applicationID: "convex",
      },
    ]);
  });

  test("ES256 and a data: URI key set", () => {
    const jwks = `data:text/plain;charset=utf-8;base64,${btoa('{"keys":[]}')}`;
    expect(
      authProvidersFrom({ ...CLERK, AUTH_JWKS: jwks, AUTH_ALGORITHM: "ES256" }),
    ).toMatchObject([{ jwks, algorithm: "ES256" }]);
  });

  test("no audience check only when asked for explicitly", () => {
    const { AUTH_APPLICATION_ID: _, ...noAudience } = CLERK;
    expect(() => authProvidersFrom(noAudience)).toThrow(/AUTH_APPLICATION_ID/);
    const [provider] = authProvidersFrom({
      ...noAudience,
      AUTH_SKIP_AUDIENCE: "true",
    });
    expect(provider).not.toHaveProperty("applicationID");
  });

  test("a half configuration fails naming the variable", () => {
    expect(() => authProvidersFrom({ ...CLERK, AUTH_JWKS: undefined })).toThrow(
      /AUTH_JWKS/,
    );
    expect(() =>
      authProvidersFrom({ ...CLERK, AUTH_JWKS: "http://evil.example/jwks" }),
    ).toThrow(/AUTH_JWKS/);
    expect(() =>
      authProvidersFrom({ ...CLERK, AUTH_ALGORITHM: "HS256" }),
    ).toThrow(/AUTH_ALGORITHM/);
  });
});

describe("auth.config.ts", () => {
  test("reads the process environment when Convex evaluates it", async () => {
    for (const [name, value] of Object.entries(CLERK)) vi.stubEnv(name, value);
    const config = (await import("../../convex/auth.config")).default;
    expect(config.providers).toMatchObject([
      { type: "customJwt", issuer: CLERK.AUTH_ISSUER },
    ]);
  });

  test("has no provider when unset", async () => {
    vi.stubEnv("AUTH_ISSUER", "");
    const config = (await import("../../convex/auth.config")).default;
    expect(config.providers).toEqual([]);
  });
});
