'use strict';
// A Node.js service that uses gatehouse's authsvc from the .proto files alone: it
// checks health, signs a user in, validates the token, lists the user's sessions with
// the admin token, shows how a refusal's google.rpc.ErrorInfo reads, and prints
// session-ended events as they happen until SIGINT/SIGTERM. Following session events
// is for front ends: it needs the front-end token.
//
// Environment:
//   GATEHOUSE_AUTH_ADDR    authsvc address (default 127.0.0.1:50051)
//   GATEHOUSE_USERNAME     user to sign in (required)
//   GATEHOUSE_PASSWORD     their password (required)
//   GATEHOUSE_ADMIN_TOKEN  admin token, for ListSessions (required)
//   GATEHOUSE_FRONTEND_TOKEN
//                          front-end token, to follow session events (make run writes
//                          .run/frontend-token); without it the stream is refused
//   GATEHOUSE_CA, GATEHOUSE_CERT, GATEHOUSE_KEY
//                          PEM files: TLS to authsvc (CA), and mTLS (cert and key)

const { grpc, env, load, errorInfo, credentials, call } = require('./common');

const loaded = load(['gatehouse/auth/v1/auth.proto', 'gatehouse/auth/v1/admin.proto', 'grpc/health/v1/health.proto']);
const v1 = loaded.gatehouse.auth.v1;

async function main() {
  const addr = env('GATEHOUSE_AUTH_ADDR', '127.0.0.1:50051');
  const username = env('GATEHOUSE_USERNAME');
  const password = env('GATEHOUSE_PASSWORD');
  const admin = new grpc.Metadata();
  admin.set('authorization', `Bearer ${env('GATEHOUSE_ADMIN_TOKEN')}`);

  const creds = credentials();
  const auth = new v1.AuthService(addr, creds);
  const adm = new v1.AdminService(addr, creds);
  const health = new loaded.grpc.health.v1.Health(addr, creds);

  const h = await call(health, 'Check', { service: 'gatehouse.auth.v1.AuthService' });
  console.log(`health: ${h.status}`);

  // user_agent and client_address are a front end's to name; this service signs in
  // as itself, so authsvc records its own address and gRPC user agent.
  const login = await call(auth, 'Login', { username, password });
  console.log(`login: user ${login.user.id} (${login.user.username}), session ${login.session.id}`);

  const v = await call(auth, 'ValidateSession', { token: login.token });
  const expires = new Date(Number(v.session.expiresAt.seconds) * 1000).toISOString();
  console.log(`validate: user ${v.user.id}, session ${v.session.id}, expires ${expires}`);

  const list = await call(adm, 'ListSessions', { userId: login.user.id, pageSize: 100 }, admin);
  console.log(`sessions: ${list.sessions.length} live for user ${login.user.id}`);

  try {
    await call(auth, 'Login', { username: 'no-such-user', password: 'wrong' });
    console.log('unknown user: accepted?!');
  } catch (err) {
    const info = errorInfo(err);
    console.log(`unknown user: ${grpc.status[err.code]} ${info ? `${info.reason} (${info.domain})` : 'no ErrorInfo'}`);
  }

  const front = new grpc.Metadata();
  const frontToken = process.env.GATEHOUSE_FRONTEND_TOKEN;
  if (frontToken) front.set('authorization', `Bearer ${frontToken}`);
  const stream = auth.WatchSessionEvents({}, front);
  stream.on('metadata', () => console.log('watching session events'));
  stream.on('data', (ev) => {
    console.log(`event: session ${ev.sessionId} of user ${ev.userId} ended: ${ev.reason}`);
  });
  stream.on('error', (err) => {
    if (err.code === grpc.status.CANCELLED) return;
    const info = errorInfo(err);
    if (info && info.reason === 'FRONTEND_TOKEN_REQUIRED') {
      console.log(`session events: ${grpc.status[err.code]} ${info.reason} (set GATEHOUSE_FRONTEND_TOKEN)`);
      auth.close(); adm.close(); health.close();
      return;
    }
    console.error(`event stream ended: ${grpc.status[err.code]} ${info ? info.reason : ''} ${err.details}`);
    process.exitCode = 1;
  });
  const stop = () => {
    stream.cancel();
    auth.close(); adm.close(); health.close();
    console.log('stopped');
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((err) => {
  const info = errorInfo(err);
  console.error(`failed: ${grpc.status[err.code] || ''} ${info ? info.reason : ''} ${err.details || err.message}`);
  process.exit(1);
});
