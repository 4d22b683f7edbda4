import { Role } from "../gen/presswork/v1/auth_pb";

/** A signed-in user, kept in sessionStorage until the token expires. */
export type Session = {
  token: string;
  expiresAtMs: number;
  username: string;
  role: Role;
};

const KEY = "presswork.session";

export function loadSession(storage: Storage = sessionStorage, now = Date.now()): Session | null {
  const raw = storage.getItem(KEY);
  if (!raw) return null;
  try {
    const session = JSON.parse(raw) as Session;
    if (typeof session.token !== "string" || typeof session.expiresAtMs !== "number") {
      storage.removeItem(KEY);
      return null;
    }
    if (session.expiresAtMs <= now) {
      storage.removeItem(KEY);
      return null;
    }
    return session;
  } catch {
    storage.removeItem(KEY);
    return null;
  }
}

export function saveSession(session: Session, storage: Storage = sessionStorage): void {
  storage.setItem(KEY, JSON.stringify(session));
}

export function clearSession(storage: Storage = sessionStorage): void {
  storage.removeItem(KEY);
}

export function isAdministrator(session: Session | null): boolean {
  return session?.role === Role.ADMINISTRATOR;
}

export function roleName(role: Role): string {
  switch (role) {
    case Role.ADMINISTRATOR:
      return "administrator";
    case Role.OPERATOR:
      return "operator";
    case Role.VIEWER:
      return "viewer";
    default:
      return "unknown role";
  }
}
