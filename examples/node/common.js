'use strict';
// What the examples share: proto loading from the contract, credentials, calls, and
// reading a refusal's google.rpc.ErrorInfo.

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const repo = path.resolve(__dirname, '..', '..');
const includeDirs = [path.join(repo, 'proto'), path.join(repo, 'third_party', 'proto')];

// env returns the environment variable name, or def, or exits saying it is needed.
function env(name, def) {
  const v = process.env[name];
  if (v) return v;
  if (def !== undefined) return def;
  console.error(`set ${name}`);
  process.exit(2);
}

// load returns gRPC stubs generated at run time from the contract's .proto files.
function load(files) {
  const definition = protoLoader.loadSync(files,
    { includeDirs, keepCase: false, longs: String, enums: String, defaults: true, oneofs: true });
  return grpc.loadPackageDefinition(definition);
}

// google.rpc.Status and its details, to read why a call failed.
const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (_origin, target) => {
  for (const dir of includeDirs) {
    const p = path.join(dir, target);
    if (fs.existsSync(p)) return p;
  }
  return target; // well-known types are built into protobufjs
};
rpcRoot.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
const Status = rpcRoot.lookupType('google.rpc.Status');

// errorInfo returns {reason, domain, metadata} from a gRPC error's details, or null.
function errorInfo(err) {
  const raw = err.metadata && err.metadata.get('grpc-status-details-bin')[0];
  if (!raw) return null;
  const st = Status.decode(raw);
  for (const any of st.details) {
    if (any.type_url === 'type.googleapis.com/google.rpc.ErrorInfo') {
      return rpcRoot.lookupType('google.rpc.ErrorInfo').decode(any.value);
    }
  }
  return null;
}

// credentials is TLS when GATEHOUSE_CA is set (mTLS with GATEHOUSE_CERT and _KEY).
function credentials() {
  const ca = process.env.GATEHOUSE_CA;
  if (!ca) return grpc.credentials.createInsecure();
  const cert = process.env.GATEHOUSE_CERT;
  const key = process.env.GATEHOUSE_KEY;
  return grpc.credentials.createSsl(fs.readFileSync(ca),
    key ? fs.readFileSync(key) : null, cert ? fs.readFileSync(cert) : null);
}

// call makes a unary call with a 10 s deadline.
const call = (client, method, req, md) => new Promise((resolve, reject) => {
  client[method](req, md || new grpc.Metadata(), { deadline: Date.now() + 10000 },
    (err, resp) => (err ? reject(err) : resolve(resp)));
});

// describe says how a call failed: its code and ErrorInfo reason.
function describe(err) {
  const info = errorInfo(err);
  return `${grpc.status[err.code] || ''} ${info ? `${info.reason} (${info.domain})` : 'no ErrorInfo'}`;
}

module.exports = { grpc, env, load, errorInfo, credentials, call, describe };
