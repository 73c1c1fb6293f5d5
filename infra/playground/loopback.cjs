// Preloaded into the M365 Agents Playground (`node --require`): it calls `server.listen(port)`
// without a host, which listens on every interface. Its connector stand-in has no authentication
// and the local bot runs with authentication off, so keep both on this machine: a listen without
// a host gets 127.0.0.1.
"use strict";
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number" && (args.length === 1 || typeof args[1] === "function")) {
    args.splice(1, 0, "127.0.0.1");
  } else if (args[0] !== null && typeof args[0] === "object" && args[0].port !== undefined
             && args[0].host === undefined && args[0].path === undefined) {
    args[0] = { ...args[0], host: "127.0.0.1" };
  }
  return listen.apply(this, args);
};
