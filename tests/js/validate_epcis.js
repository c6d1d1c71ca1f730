// Validates EPCIS 2.0 documents with epcis2.js (the EPCIS 2.0 JSON schema and its extension rules).
// Reads a JSON array of documents on stdin; writes a JSON array of {success, errors}, one per document.
const { validateEpcisDocument } = require('epcis2.js');

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  const results = JSON.parse(input).map((document) => {
    try {
      return validateEpcisDocument(document, false);
    } catch (error) {
      return { success: false, errors: [String(error.message || error)] };
    }
  });
  process.stdout.write(JSON.stringify(results));
});
