// Counts tokens of texts with a real tokenizer that ships its vocabulary (gpt-tokenizer's
// o200k_base, GPT-4o's and GPT-5's): reads a JSON array of strings on stdin, writes their counts.
import { countTokens } from "gpt-tokenizer/encoding/o200k_base";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const texts = JSON.parse(input);
process.stdout.write(JSON.stringify(texts.map((text) => countTokens(text))));
