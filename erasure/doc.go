// Package erasure cuts a segment of a file into n = k+m shards with a systematic
// Reed-Solomon code, so that any k of them rebuild it. Each Shard carries its index, the
// code's k and m, the segment's length and a SHA-256 of its data, so that a shard can be
// checked and placed on its own: Reed-Solomon can rebuild missing shards but cannot tell
// which present shard is wrong, so Join and Reconstruct treat a shard that fails its hash
// or disagrees with the others as missing, and use the parity to find a shard whose hash
// is right but whose index is not. SplitReader codes a stream segment by segment in one
// reused buffer, so memory stays bounded whatever the file size. Shards are not
// compatible with DIBS 0.93 pieces (another field polynomial and byte striping).
package erasure
