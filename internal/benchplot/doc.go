// Package benchplot draws the curves of a `chipledger bench` report: append
// throughput, append latency and inclusion-proof latency as the log grows,
// and append throughput against concurrency for each cluster size. It only
// draws (with gonum.org/v1/plot); the measuring is internal/loadgen's.
package benchplot
