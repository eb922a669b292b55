// Package format is the layout of a backup in an object store: the
// datastore's (already compressed) backup stream encrypted with a fresh
// data key in authenticated chunks, cut into segments each recorded with
// its SHA-256, and a Manifest that lists them beside the data key wrapped
// by the controller's key-encryption key (KEK). It also removes what
// failed or deleted backups left behind (Collect).
//
// The stream: AES-256-GCM over chunks of ChunkSize plaintext bytes (the
// last one shorter, possibly empty), each sealed with the nonce
// counter‖last-flag of the STREAM construction, so dropping, reordering or
// cutting chunks, segments or the end of the stream fails authentication.
// Segments hold whole chunks; a segment's name is its number below the
// backup's prefix.
//
// Everything streams: a Writer holds one chunk and an upload's buffers, a
// Reader one chunk, whatever the backup's size. The package must not know
// about datastores or the API: the fields it does not use (backup and
// parent id, datastore, positions) are carried, not interpreted; and it
// never writes a clear data key anywhere.
package format
