import { Role } from "../gen/presswork/v1/auth_pb";
import { clearSession, isAdministrator, loadSession, roleName, saveSession } from "./session";

const session = { token: "t", expiresAtMs: 2000, username: "ada", role: Role.ADMINISTRATOR };

describe("session", () => {
  it("is kept until the token expires", () => {
    saveSession(session);
    expect(loadSession(sessionStorage, 1000)).toEqual(session);
    expect(loadSession(sessionStorage, 2000)).toBeNull();
    expect(sessionStorage.length).toBe(0);
  });

  it("forgets what it cannot read, and on sign-out", () => {
    sessionStorage.setItem("presswork.session", "{not json");
    expect(loadSession()).toBeNull();
    sessionStorage.setItem("presswork.session", JSON.stringify({ token: 1 }));
    expect(loadSession()).toBeNull();
    expect(loadSession()).toBeNull();
    saveSession(session);
    clearSession();
    expect(loadSession(sessionStorage, 0)).toBeNull();
  });

  it("knows administrators and names roles", () => {
    expect(isAdministrator(session)).toBe(true);
    expect(isAdministrator({ ...session, role: Role.VIEWER })).toBe(false);
    expect(isAdministrator(null)).toBe(false);
    expect([Role.ADMINISTRATOR, Role.OPERATOR, Role.VIEWER, Role.UNSPECIFIED].map(roleName)).toEqual([
      "administrator",
      "operator",
      "viewer",
      "unknown role",
    ]);
  });
});
