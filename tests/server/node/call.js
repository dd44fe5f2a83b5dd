// One unary call to saferoom from Node.js: @grpc/grpc-js with mutual TLS, the service definitions loaded by
// @grpc/proto-loader straight from protos/ (nothing generated). Used by tests/server/test_api_interop.py.
//
//   node call.js PROTOS_DIR ADDRESS CA CERT KEY SERVICE METHOD [REQUEST_JSON]
//
// SERVICE is a full name (saferoom.v1.CatalogService). Prints one JSON line: {"response": ...} or
// {"code": N, "details": "..."}; exits 0 either way (the test judges), 2 on a usage or loading error.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

function main(argv) {
  if (argv.length < 7) {
    console.error("usage: node call.js PROTOS_DIR ADDRESS CA CERT KEY SERVICE METHOD [REQUEST_JSON]");
    process.exit(2);
  }
  const [protos, address, ca, cert, key, service, method, request] = argv;
  const files = fs
    .readdirSync(path.join(protos, "saferoom", "v1"))
    .filter((f) => f.endsWith(".proto"))
    .map((f) => path.join("saferoom", "v1", f));
  const definition = protoLoader.loadSync(files, {
    includeDirs: [protos],
    keepCase: true,
    enums: String,
    longs: String,
    defaults: true,
    oneofs: true,
  });
  let Service = grpc.loadPackageDefinition(definition);
  for (const part of service.split(".")) {
    Service = Service && Service[part];
  }
  if (typeof Service !== "function" || !Service.service[method]) {
    console.error(`no method ${service}/${method} in ${protos}`);
    process.exit(2);
  }
  const credentials = grpc.credentials.createSsl(
    fs.readFileSync(ca),
    fs.readFileSync(key),
    fs.readFileSync(cert),
  );
  const client = new Service(address, credentials);
  const deadline = new Date(Date.now() + 30000);
  client[method](JSON.parse(request || "{}"), { deadline }, (error, response) => {
    if (error) {
      console.log(JSON.stringify({ code: error.code, details: error.details }));
    } else {
      console.log(JSON.stringify({ response }));
    }
    client.close();
  });
}

main(process.argv.slice(2));
