'use strict';
// A Node.js service pushing to signed-in users through an edge's API
// (gatehouse.edge.v1.EdgeService), from the .proto files alone: it sends a
// notification to every connection of a user, puts them in a room, asks the room's
// presence and lists their connections, and shows how a refusal's reason reads.
//
// Environment:
//   GATEHOUSE_EDGE_API_ADDR  the edge API's address (default 127.0.0.1:50052)
//   GATEHOUSE_API_TOKEN      the edge API token (make run writes .run/api-token)
//   GATEHOUSE_USER_ID        whom to notify (required)
//   GATEHOUSE_ROOM           the group to put them in (default lobby)
//   GATEHOUSE_CA, GATEHOUSE_CERT, GATEHOUSE_KEY
//                            PEM files: TLS to the edge API (CA), and mTLS

const { grpc, env, load, credentials, call, describe } = require('./common');

const v1 = load(['gatehouse/edge/v1/edge.proto']).gatehouse.edge.v1;

async function main() {
  const addr = env('GATEHOUSE_EDGE_API_ADDR', '127.0.0.1:50052');
  const userId = env('GATEHOUSE_USER_ID');
  const room = env('GATEHOUSE_ROOM', 'lobby');
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${env('GATEHOUSE_API_TOKEN')}`);
  const edge = new v1.EdgeService(addr, credentials());
  const user = { userId };

  await call(edge, 'Send', { target: user, text: JSON.stringify({ type: 'notification', text: 'Your report is ready' }) }, md);
  console.log(`sent: a notification to user ${userId}`);

  await call(edge, 'GroupAdd', { group: room, target: user }, md);
  const p = await call(edge, 'GroupPresence', { group: room }, md);
  const who = p.users.map((u) => `${u.username} (${u.connectionCount})`).join(', ');
  console.log(`presence of ${room}: ${p.connectionCount} connections; users: ${who}`);

  await call(edge, 'Send', { target: { group: room }, text: `hello, ${room}` }, md);
  console.log(`sent: a message to ${room}`);

  const list = await call(edge, 'ListConnections', { target: user, pageSize: 100 }, md);
  for (const c of list.connections) {
    console.log(`connection ${c.id}: ${c.path} in [${c.groups.join(', ')}] on ${c.edge}`);
  }

  try {
    await call(edge, 'Send', { target: { group: 'not a group' }, text: 'x' }, md);
    console.log('bad group: accepted?!');
  } catch (err) {
    console.log(`bad group: ${describe(err)}`);
  }
  try {
    await call(edge, 'Send', { target: user, text: 'x' });
    console.log('no token: accepted?!');
  } catch (err) {
    console.log(`no token: ${describe(err)}`);
  }
  edge.close();
}

main().catch((err) => {
  console.error(`failed: ${describe(err)} ${err.details || err.message}`);
  process.exit(1);
});
