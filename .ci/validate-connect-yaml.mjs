// Validates a connect.yaml with commercetools' own schema: the parser of @commercetools-connect/specification,
// which the Connect CLI uses. Install it first: npm install --prefix .ci/node @commercetools-connect/specification
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const entry = join(here, "node", "node_modules", "@commercetools-connect", "specification", "dist", "index.js");
const { ConnectorSpecificationParser } = await import(pathToFileURL(entry).href);

const file = process.argv[2] ?? "connect.yaml";
try {
  await new ConnectorSpecificationParser().parse(readFileSync(file, "utf8"));
  console.log(`${file}: valid`);
} catch (error) {
  console.error(`${file}: invalid\n${error.message}`);
  process.exit(1);
}
