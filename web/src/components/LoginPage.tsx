import { useState, type FormEvent } from "react";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Clients } from "../api/clients";
import { Role } from "../gen/presswork/v1/auth_pb";
import type { Session } from "../session/session";

type Props = {
  auth: Clients["auth"];
  /** Why the user is here again (an expired session), shown above the form. */
  notice?: string;
  onSignedIn: (session: Session) => void;
};

function loginErrorMessage(error: unknown): string {
  const e = ConnectError.from(error);
  switch (e.code) {
    case Code.Unauthenticated:
      return "Wrong username or password.";
    case Code.ResourceExhausted:
      return "Too many sign-in attempts. Wait a moment and try again.";
    case Code.InvalidArgument:
      return "Enter a username and a password.";
    default:
      return "The control plane could not be reached. Check the connection and try again.";
  }
}

export function LoginPage({ auth, notice, onSignedIn }: Props) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError("");
    try {
      const response = await auth.login({ username, password });
      onSignedIn({
        token: response.token,
        expiresAtMs: Number(response.expiresAtUnixMs),
        username: response.user?.username ?? username,
        role: response.user?.role ?? Role.UNSPECIFIED,
      });
    } catch (e) {
      setError(loginErrorMessage(e));
      setBusy(false);
    }
  }

  return (
    <main className="login">
      <h1>Presswork</h1>
      <p className="subtitle">Sign in to see and manage report jobs.</p>
      {notice && (
        <p className="notice" role="status">
          {notice}
        </p>
      )}
      <form onSubmit={submit} aria-describedby={error ? "login-error" : undefined}>
        <label htmlFor="username">Username</label>
        <input
          id="username"
          name="username"
          autoComplete="username"
          required
          value={username}
          onChange={(e) => setUsername(e.target.value)}
        />
        <label htmlFor="password">Password</label>
        <input
          id="password"
          name="password"
          type="password"
          autoComplete="current-password"
          required
          value={password}
          onChange={(e) => setPassword(e.target.value)}
        />
        <div id="login-error" role="alert" className="error">
          {error}
        </div>
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Signing in..." : "Sign in"}
        </button>
      </form>
    </main>
  );
}
