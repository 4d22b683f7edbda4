import { createRouterTransport } from "@connectrpc/connect";
import { AuthService } from "../gen/presswork/v1/auth_pb";
import { bearerInterceptor, browserTransport, createClients } from "./clients";

describe("clients", () => {
  it("send the token only while one is known", async () => {
    const seen: (string | null)[] = [];
    let token: string | null = null;
    const transport = createRouterTransport(
      ({ service }) =>
        service(AuthService, {
          whoAmI(_req, ctx) {
            seen.push(ctx.requestHeader.get("authorization"));
            return {};
          },
        }),
      { transport: { interceptors: [bearerInterceptor(() => token)] } },
    );
    const { auth } = createClients(transport);
    await auth.whoAmI({});
    token = "abc";
    await auth.whoAmI({});
    expect(seen).toEqual([null, "Bearer abc"]);
  });

  it("talk grpc-web to the page's own origin", () => {
    const transport = browserTransport(() => null);
    expect(typeof transport.unary).toBe("function");
    expect(typeof transport.stream).toBe("function");
  });
});
