#!/usr/bin/env bash
# Makes a throwaway CA and certificates for trying TLS and mTLS locally:
#   DIR/ca.pem                     the CA (give it to clients, and to authsvc as client CA)
#   DIR/server.pem, server-key.pem for authsvc and edgesvc (valid for 127.0.0.1, localhost)
#   DIR/client.pem, client-key.pem a client certificate (for edgesvc or grpcurl, mTLS)
# Usage: scripts/devcerts.sh [DIR]   (default: certs). Needs openssl. Valid 30 days.
set -euo pipefail
out=${1:-certs}
mkdir -p "$out"
cd "$out"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -days 30 -subj "/CN=gatehouse dev CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
  -keyout ca-key.pem -out ca.pem 2>/dev/null
for name in server client; do
  openssl req "${ec[@]}" -subj "/CN=gatehouse $name" -keyout "$name-key.pem" -out "$name.csr" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 -out "$name.pem" \
    -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n') 2>/dev/null
  rm "$name.csr"
done
rm -f ca.srl
chmod 600 ./*-key.pem
echo "wrote $(pwd)/{ca,server,server-key,client,client-key}.pem"
