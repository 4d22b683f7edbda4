import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AuthService } from "../gen/presswork/v1/auth_pb";
import { JobService } from "../gen/presswork/v1/jobs_pb";

export type Clients = {
  auth: Client<typeof AuthService>;
  jobs: Client<typeof JobService>;
};

/** Adds `authorization: Bearer <token>` to every call made while a token is known. */
export function bearerInterceptor(token: () => string | null): Interceptor {
  return (next) => async (request) => {
    const value = token();
    if (value) request.header.set("authorization", `Bearer ${value}`);
    return next(request);
  };
}

/** grpc-web to the server the dashboard was loaded from (the control plane serves both). */
export function browserTransport(token: () => string | null): Transport {
  return createGrpcWebTransport({
    baseUrl: window.location.origin,
    interceptors: [bearerInterceptor(token)],
  });
}

export function createClients(transport: Transport): Clients {
  return {
    auth: createClient(AuthService, transport),
    jobs: createClient(JobService, transport),
  };
}
