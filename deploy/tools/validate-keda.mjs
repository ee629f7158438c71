// Validates the KEDA objects (keda.sh/v1alpha1 ScaledObject and TriggerAuthentication) in the
// YAML files given as arguments against KEDA's CRD schemas, as compiled into the pinned
// @kubernetes-models/keda package (package-lock.json). Other kinds are left to
// kubernetes-validate. Prints one line per object; exits 1 when any object fails or a file
// holds no KEDA object at all.
//
//   node deploy/tools/validate-keda.mjs deploy/kubernetes/keda-*.yaml
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";

const models = { ScaledObject, TriggerAuthentication };
let failed = false;
for (const file of process.argv.slice(2)) {
  let seen = 0;
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    if (doc.errors.length > 0) {
      console.log(`ERROR ${file}: YAML: ${doc.errors[0].message}`);
      failed = true;
      continue;
    }
    const object = doc.toJS();
    if (!object || !String(object.apiVersion ?? "").startsWith("keda.sh/")) continue;
    seen++;
    const what = `${object.kind}/${object.metadata?.name}`;
    const Model = object.apiVersion === "keda.sh/v1alpha1" ? models[object.kind] : undefined;
    if (!Model) {
      console.log(`ERROR ${file}: ${what}: no schema for ${object.apiVersion} ${object.kind}`);
      failed = true;
      continue;
    }
    try {
      new Model(object).validate();
      console.log(`INFO ${file} passed for ${what}`);
    } catch (e) {
      console.log(`ERROR ${file}: ${what}: ${e.message}`);
      failed = true;
    }
  }
  if (seen === 0) {
    console.log(`ERROR ${file}: no keda.sh object in it`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
