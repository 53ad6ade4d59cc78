// Validates prometheus-operator resources against the operator's CRD schemas, as compiled into
// the npm package @kubernetes-models/prometheus-operator (JSON Schema validators generated from
// the operator's CustomResourceDefinitions; no network, no cluster).
//
//   node scripts/validate-prometheus-operator.mjs NODE_MODULES < resources.json
//
// stdin: a JSON array of {file, resource}. Prints one line per resource, "ok FILE KIND/NAME"
// or "ERROR FILE KIND/NAME: why"; exits 1 when any failed or was of an unknown kind.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
if (!modules) {
  console.error("usage: validate-prometheus-operator.mjs NODE_MODULES < resources.json");
  process.exit(2);
}
const items = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const { file, resource } of items) {
  const [group, version] = String(resource.apiVersion ?? "").split("/");
  const name = `${resource.kind}/${resource.metadata?.name}`;
  if (group !== "monitoring.coreos.com" || !version || !/^[A-Za-z]+$/.test(resource.kind ?? "")) {
    console.log(`ERROR ${file} ${name}: not a monitoring.coreos.com resource`);
    failed++;
    continue;
  }
  const path = join(modules, "@kubernetes-models/prometheus-operator", group, version, `${resource.kind}.js`);
  let Model;
  try {
    Model = (await import(pathToFileURL(path).href))[resource.kind];
  } catch (e) {
    console.log(`ERROR ${file} ${name}: no schema for ${resource.apiVersion} ${resource.kind} (${e.message})`);
    failed++;
    continue;
  }
  try {
    new Model(resource).validate();
    console.log(`ok ${file} ${name}`);
  } catch (e) {
    console.log(`ERROR ${file} ${name}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
