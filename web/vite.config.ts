/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// In development the dashboard is served by Vite and talks to the control plane through this
// proxy (same origin, no CORS). In production the control plane serves web/dist itself.
const controlPlane = process.env.PRESSWORK_SERVER ?? "http://127.0.0.1:7070";

export default defineConfig({
  plugins: [react()],
  server: {
    proxy: {
      "^/presswork\\.v1\\.": { target: controlPlane, changeOrigin: false },
    },
  },
  test: {
    environment: "jsdom",
    globals: true,
    setupFiles: ["./src/test/setup.ts"],
    include: ["src/**/*.test.{ts,tsx}"],
    coverage: {
      provider: "v8",
      include: ["src/**/*.{ts,tsx}"],
      exclude: ["src/gen/**", "src/test/**", "src/**/*.test.{ts,tsx}", "src/main.tsx"],
      reporter: ["text-summary", "text"],
    },
  },
});
