// Type-checks a Grafana dashboard JSON model against Grafana's own Dashboard type
// (@grafana/schema), as an object literal, so that unknown properties and wrong types are errors.
//   node check-dashboard.mjs dashboard.json   ->  prints a JSON list of TypeScript's complaints
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const here = path.dirname(fileURLToPath(import.meta.url));
const model = JSON.parse(readFileSync(process.argv[2], "utf8"));
// Grafana's enums (MappingType, ThresholdsMode, ...) as the strings a JSON model holds.
const source = `import type { Dashboard } from "@grafana/schema";
type Json<T> = T extends string ? (string extends T ? string : \`\${T}\`)
  : T extends (infer U)[] ? Json<U>[]
  : T extends object ? { [K in keyof T]: Json<T[K]> }
  : T;
export const dashboard: Json<Dashboard> = ${JSON.stringify(model, null, 1)};
`;
// The file exists only in memory, beside node_modules so that @grafana/schema resolves.
const file = path.join(here, "dashboard-check.ts");
const options = {
  strict: true, noEmit: true, skipLibCheck: true,
  module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
  target: ts.ScriptTarget.ES2022,
};
const host = ts.createCompilerHost(options);
const readFile = host.readFile.bind(host);
const getSourceFile = host.getSourceFile.bind(host);
host.fileExists = (name) => name === file || ts.sys.fileExists(name);
host.readFile = (name) => (name === file ? source : readFile(name));
host.getSourceFile = (name, version) =>
  name === file ? ts.createSourceFile(name, source, version) : getSourceFile(name, version);
const program = ts.createProgram([file], options, host);
const problems = ts.getPreEmitDiagnostics(program).map((diagnostic) => {
  const text = ts.flattenDiagnosticMessageText(diagnostic.messageText, "\n");
  if (!diagnostic.file) return text;
  const { line } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start ?? 0);
  const shown = source.split("\n")[line]?.trim() ?? "";
  return `${text} (at: ${shown})`;
});
console.log(JSON.stringify(problems));
