// The unleash-server the flag tests run: loopback only, no authentication, its own database.
//
//   UNLEASH_PORT=4242 UNLEASH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/unleash_x node server.js
//
// With authentication type 'none' a client must send no Authorization header at all: any
// header, even an empty one, is checked as an API token and refused.
import { start } from 'unleash-server';

const port = Number.parseInt(process.env.UNLEASH_PORT ?? '', 10);
const databaseUrl = process.env.UNLEASH_DATABASE_URL;
if (!Number.isInteger(port) || port <= 0 || !databaseUrl) {
    console.error('set UNLEASH_PORT (a free TCP port) and UNLEASH_DATABASE_URL');
    process.exit(2);
}
// The test machine reaches no network but package registries: no phoning home. The
// telemetry option only switches telemetry on, so it is turned off through the environment.
process.env.SEND_TELEMETRY = 'false';
process.env.CHECK_VERSION = 'false';

const unleash = await start({
    databaseUrl,
    db: { ssl: false },
    server: { host: '127.0.0.1', port },
    authentication: { type: 'none' },
    versionCheck: { enable: false },
    logLevel: process.env.UNLEASH_LOG_LEVEL ?? 'warn',
});
console.log(`unleash-server listening on http://127.0.0.1:${port}`);

let stopping = false;
for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, async () => {
        if (stopping) return;
        stopping = true;
        await unleash.stop();
        process.exit(0);
    });
}
