// bench serve: answers every request with "hello" (wrk drives it).
// Usage: node serve.js PORT; prints "port=N" once listening.
const http = require("http");
const server = http.createServer((req, res) => {
  res.end("hello");
});
server.listen(Number(process.argv[2] || 0), "127.0.0.1", () => {
  console.log(`port=${server.address().port}`);
});
