'use strict';
// A Node.js application deciding what a browser's socket does: it implements
// gatehouse.app.v1.ConsumerService, from the .proto files alone, for a route such as
// /ws/commands/{room}/ (the edge's EDGESVC_ROUTES_FILE points the route here). The
// edge signs users in and checks their session before it calls Connect; this service
// only decides. A small "commands" room:
//   /who          who is in your room (asked of the edge's API: GroupPresence)
//   /join ROOM    leave your room for ROOM
//   anything else is said to everyone in your room
//
// Environment:
//   GATEHOUSE_CONSUMER_LISTEN  where to serve (default 127.0.0.1:50070)
//   GATEHOUSE_CONSUMER_TOKEN   the token the edge must present (the route's token_file);
//                              unset: calls are not checked
//   GATEHOUSE_EDGE_API_ADDR    the edge API, for /who (default 127.0.0.1:50052)
//   GATEHOUSE_API_TOKEN        the edge API token (make run writes .run/api-token)

const crypto = require('node:crypto');
const { grpc, env, load, credentials, call, describe } = require('./common');

const loaded = load(['gatehouse/app/v1/consumer.proto', 'gatehouse/edge/v1/edge.proto']);
const app = loaded.gatehouse.app.v1;
const edgeV1 = loaded.gatehouse.edge.v1;

const listen = env('GATEHOUSE_CONSUMER_LISTEN', '127.0.0.1:50070');
const token = process.env.GATEHOUSE_CONSUMER_TOKEN || '';
const edge = new edgeV1.EdgeService(env('GATEHOUSE_EDGE_API_ADDR', '127.0.0.1:50052'), credentials());
const apiMD = new grpc.Metadata();
apiMD.set('authorization', `Bearer ${env('GATEHOUSE_API_TOKEN')}`);

// The room each connection is in, by connection id: this service's own state, which
// Disconnect (best effort) clears.
const rooms = new Map();
const ROOM = /^[A-Za-z0-9_.-]{1,90}$/;
const group = (room) => `commands.${room}`;

// Actions, as the proto has them.
const reply = (text) => ({ reply: { text } });
const join = (room) => ({ join: { group: group(room) } });
const leave = (room) => ({ leave: { group: group(room) } });
const say = (room, text) => ({ send: { target: { group: group(room) }, text } });

// authorized checks the edge's token, if this service has one, in constant time (as
// SHA-256 digests: neither its content nor its length leaks through timing).
const digest = (s) => crypto.createHash('sha256').update(String(s)).digest();
function authorized(callObj) {
  if (!token) return true;
  const got = callObj.metadata.get('authorization');
  return got.length === 1 && crypto.timingSafeEqual(digest(got[0]), digest(`Bearer ${token}`));
}

// handle wraps an async handler as a grpc-js unary one.
const handle = (fn) => (callObj, done) => {
  if (!authorized(callObj)) {
    done({ code: grpc.status.UNAUTHENTICATED, details: 'wrong or missing token' });
    return;
  }
  fn(callObj.request).then((resp) => done(null, resp), (err) => {
    console.error(`failed: ${err.message}`);
    done({ code: grpc.status.INTERNAL, details: err.message });
  });
};

async function connect({ connection: c }) {
  const room = c.pathParams.room || 'lobby';
  if (!ROOM.test(room)) {
    return { refusal: { status: 404, reason: 'NO_SUCH_ROOM', message: `no room ${room}` } };
  }
  rooms.set(c.id, room);
  console.log(`connect: ${c.user.username} (${c.id}) to ${room}`);
  return {
    actions: [
      join(room),
      reply(`welcome ${c.user.username} to ${room}: try /who, /join ROOM, or say something`),
      say(room, `${c.user.username} joined`),
    ],
  };
}

async function receive({ connection: c, text, payload }) {
  const room = rooms.get(c.id) || c.pathParams.room;
  if (payload !== 'text') {
    return { actions: [{ close: { code: 4000, reason: 'send text' } }] };
  }
  if (text === '/who') {
    const p = await call(edge, 'GroupPresence', { group: group(room) }, apiMD);
    const who = p.users.map((u) => u.username).join(', ');
    return { actions: [reply(`in ${room}: ${who}`)] };
  }
  if (text.startsWith('/join ')) {
    const next = text.slice(6).trim();
    if (!ROOM.test(next)) return { actions: [reply(`no room ${next}: letters, digits, '-', '_', '.'`)] };
    rooms.set(c.id, next);
    return { actions: [leave(room), join(next), reply(`you are in ${next}`), say(next, `${c.user.username} joined`)] };
  }
  return { actions: [say(room, `${c.user.username}: ${text}`)] };
}

async function disconnect({ connection: c, code }) {
  console.log(`disconnect: ${c.user.username} (${c.id}) with ${code}`);
  rooms.delete(c.id);
  return {};
}

const server = new grpc.Server();
server.addService(app.ConsumerService.service, {
  connect: handle(connect), receive: handle(receive), disconnect: handle(disconnect),
});
server.bindAsync(listen, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(`cannot listen on ${listen}: ${err.message}`);
    process.exit(1);
  }
  console.log(`consumer listening on ${listen.replace(/:\d+$/, '')}:${port}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => server.tryShutdown(() => process.exit(0)));
}
process.on('unhandledRejection', (err) => console.error(`failed: ${describe(err)}`));
