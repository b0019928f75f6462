// How every browser harness of the tests starts Debian's Chromium through playwright-core
// (never a downloaded browser): headless, kept off the network beyond the page's own
// requests (no QUIC, no component updates, no sync), autoplay allowed.
export const CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                              "--disable-background-networking", "--disable-component-update", "--disable-sync",
                              "--autoplay-policy=no-user-gesture-required"];

// Options for chromium.launch / launchPersistentContext, with `extraArgs` after the common ones.
export function launchOptions(extraArgs = []) {
  return { executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true,
           args: [...CHROMIUM_ARGS, ...extraArgs] };
}
