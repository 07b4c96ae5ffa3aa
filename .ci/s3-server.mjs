// The S3 server of `.ci/s3`: @20minutes/s3rver on 127.0.0.1, objects under the directory given as the first argument.
// A script rather than its CLI: the npm package ships without the bin/ its package.json names.
import S3rver from "@20minutes/s3rver";

const [directory, port = "4569"] = process.argv.slice(2);
if (!directory) throw new Error("usage: node .ci/s3-server.mjs <directory> [port]");

// Path-style only (the tests' clients use forcePathStyle): no host name is ever read as a bucket.
const server = new S3rver({ address: "127.0.0.1", port: Number(port), directory, vhostBuckets: false });
const address = await server.run();
console.log(`s3rver listening on ${address.address}:${address.port}, objects in ${directory}`);
