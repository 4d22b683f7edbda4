import { Code, ConnectError } from "@connectrpc/connect";
import { cancelErrorMessage, isSessionExpired } from "./errors";

describe("cancel errors", () => {
  it("explains each refusal", () => {
    const m = (code: Code, text = "x") => cancelErrorMessage(new ConnectError(text, code), "j1");
    expect(m(Code.PermissionDenied)).toMatch(/only administrators may cancel/);
    expect(m(Code.FailedPrecondition)).toMatch(/not in a cancellable state/);
    expect(m(Code.NotFound)).toMatch(/no such job/);
    expect(m(Code.Unauthenticated)).toMatch(/session has expired/);
    expect(m(Code.Unavailable)).toMatch(/could not be reached/);
    expect(m(Code.Aborted, "busy")).toBe("Could not cancel job j1: busy.");
    expect(m(Code.Aborted, "")).toBe("Could not cancel job j1: unexpected error.");
    expect(cancelErrorMessage(new TypeError("Failed to fetch"), "j1")).toMatch(/could not be reached/);
  });

  it("recognises an expired session", () => {
    expect(isSessionExpired(new ConnectError("", Code.Unauthenticated))).toBe(true);
    expect(isSessionExpired(new Error("x"))).toBe(false);
  });
});
