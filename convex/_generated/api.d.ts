/* eslint-disable */
/**
 * Generated `api` utility.
 *
 * THIS CODE IS AUTOMATICALLY GENERATED.
 *
 * To regenerate, run `npx convex dev`.
 * @module
 */

import type {
  ApiFromModules,
  FilterApi,
  FunctionReference,
} from "convex/server";
import type * as access from "../access.js";
import type * as assets from "../assets.js";
import type * as events from "../events.js";
import type * as lifecycle from "../lifecycle.js";
import type * as model_access from "../model/access.js";
import type * as model_authConfig from "../model/authConfig.js";
import type * as model_identity from "../model/identity.js";
import type * as model_lifecycle from "../model/lifecycle.js";
import type * as model_public from "../model/public.js";
import type * as model_scenes from "../model/scenes.js";
import type * as model_sessions from "../model/sessions.js";
import type * as model_tracking from "../model/tracking.js";
import type * as model_uploads from "../model/uploads.js";
import type * as model_uploadsManifest from "../model/uploadsManifest.js";
import type * as model_urlPolicy from "../model/urlPolicy.js";
import type * as operations from "../operations.js";
import type * as ordering from "../ordering.js";
import type * as retention from "../retention.js";
import type * as sessions from "../sessions.js";
import type * as trace from "../trace.js";
import type * as uploads from "../uploads.js";
import type * as urls from "../urls.js";

/**
 * A utility for referencing Convex functions in your app's API.
 *
 * Usage:
 * ```js
 * const myFunctionReference = api.myModule.myFunction;
 * ```
 */
declare const fullApi: ApiFromModules<{
  access: typeof access;
  assets: typeof assets;
  events: typeof events;
  lifecycle: typeof lifecycle;
  "model/access": typeof model_access;
  "model/authConfig": typeof model_authConfig;
  "model/identity": typeof model_identity;
  "model/lifecycle": typeof model_lifecycle;
  "model/public": typeof model_public;
  "model/scenes": typeof model_scenes;
  "model/sessions": typeof model_sessions;
  "model/tracking": typeof model_tracking;
  "model/uploads": typeof model_uploads;
  "model/uploadsManifest": typeof model_uploadsManifest;
  "model/urlPolicy": typeof model_urlPolicy;
  operations: typeof operations;
  ordering: typeof ordering;
  retention: typeof retention;
  sessions: typeof sessions;
  trace: typeof trace;
  uploads: typeof uploads;
  urls: typeof urls;
}>;
export declare const api: FilterApi<
  typeof fullApi,
  FunctionReference<any, "public">
>;
export declare const internal: FilterApi<
  typeof fullApi,
  FunctionReference<any, "internal">
>;
