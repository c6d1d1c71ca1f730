// epcis2.js depends on the npm placeholder "fs"; it means Node's built-in module.
module.exports = require("node:fs");
