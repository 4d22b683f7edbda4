import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import * as Tooltip from "@radix-ui/react-tooltip";
import { browserTransport, createClients, type Clients } from "./api/clients";
import { Dashboard } from "./components/Dashboard";
import { LoginPage } from "./components/LoginPage";
import { clearSession, loadSession, saveSession, type Session } from "./session/session";

export const EXPIRED_NOTICE = "Your session has expired. Please sign in again.";

type Props = {
  /** Makes the API clients; the token getter gives the signed-in user's token. */
  makeClients?: (token: () => string | null) => Clients;
};

const defaultClients = (token: () => string | null) => createClients(browserTransport(token));

/** Longest wait setTimeout supports. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export function App({ makeClients = defaultClients }: Props) {
  const [session, setSession] = useState<Session | null>(() => loadSession());
  const [notice, setNotice] = useState<string | undefined>();
  const tokenRef = useRef<string | null>(session?.token ?? null);
  tokenRef.current = session?.token ?? null;
  const clients = useMemo(() => makeClients(() => tokenRef.current), [makeClients]);

  const signIn = useCallback((next: Session) => {
    saveSession(next);
    tokenRef.current = next.token;
    setNotice(undefined);
    setSession(next);
  }, []);

  const signOut = useCallback((why?: string) => {
    clearSession();
    tokenRef.current = null;
    setNotice(why);
    setSession(null);
  }, []);

  const expire = useCallback(() => signOut(EXPIRED_NOTICE), [signOut]);

  // Back to the sign-in page when the token expires.
  useEffect(() => {
    if (!session) return;
    const timer = setTimeout(expire, Math.min(Math.max(session.expiresAtMs - Date.now(), 0), MAX_TIMER_MS));
    return () => clearTimeout(timer);
  }, [session, expire]);

  return (
    <Tooltip.Provider delayDuration={300}>
      {session ? (
        <Dashboard
          key={session.token}
          clients={clients}
          session={session}
          onSessionChange={signIn}
          onExpired={expire}
          onSignOut={() => signOut()}
        />
      ) : (
        <LoginPage auth={clients.auth} notice={notice} onSignedIn={signIn} />
      )}
    </Tooltip.Provider>
  );
}
