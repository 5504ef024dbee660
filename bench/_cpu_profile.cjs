// Preloaded with NODE_OPTIONS=--require: V8 CPU profile of this process, written at exit.
const inspector = require("node:inspector");
const fs = require("node:fs");
const path = require("node:path");
const dir = process.env.CPU_PROFILE_DIR;
if (dir && !process.argv.some((a) => a.includes("cli.mjs") || a.endsWith("/tsx"))) {
  const session = new inspector.Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.setSamplingInterval", { interval: 500 });
  session.post("Profiler.start");
  process.on("exit", () => {
    session.post("Profiler.stop", (err, res) => {
      if (!err) fs.writeFileSync(path.join(dir, `cpu-${process.pid}.cpuprofile`), JSON.stringify(res.profile));
    });
  });
}
