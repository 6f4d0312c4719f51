// Validates Prometheus Operator objects (ServiceMonitor, PrometheusRule) against the operator's
// CRD schemas, as @kubernetes-models/prometheus-operator compiles them.
//   node validate.mjs objects.json   ->  prints a JSON list: null (valid) or the errors, per object
import { readFileSync } from "node:fs";
import {
  PrometheusRule,
  ServiceMonitor,
} from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const kinds = { PrometheusRule, ServiceMonitor };
const objects = JSON.parse(readFileSync(process.argv[2], "utf8"));
const results = objects.map((object) => {
  const Kind = kinds[object.kind];
  if (!Kind) {
    return `no schema here for kind ${object.kind}`;
  }
  try {
    new Kind(object).validate();
    return null;
  } catch (error) {
    return String(error.message ?? error);
  }
});
console.log(JSON.stringify(results));
