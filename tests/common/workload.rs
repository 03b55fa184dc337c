//! The clients of the fault tests: threads that write keys of their own and read each
//! other's, recording every operation in a shared [`Recorder`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use corekv::check::ClientId;
use corekv::client::Client;

use super::history::Recorder;

/// The keys of a fault test's clients: `<prefix><writer>/<index>`, each written by one
/// client only.
#[derive(Clone, Copy, Debug)]
pub struct OwnedKeys {
    pub prefix: &'static str,
    pub writers: u64,
    pub keys_per_writer: u64,
}

impl OwnedKeys {
    pub fn key(&self, writer: u64, index: u64) -> String {
        format!("{}{writer}/{index:02}", self.prefix)
    }

    /// Every key, writer by writer.
    pub fn all(&self) -> Vec<String> {
        (0..self.writers)
            .flat_map(|writer| (0..self.keys_per_writer).map(move |index| self.key(writer, index)))
            .collect()
    }
}

/// Starts one [`spawn_put_get_client`] thread per writer of `keys`.
pub fn spawn_put_get_clients(
    sdk: &Arc<Client>,
    recorder: &Arc<Recorder>,
    keys: OwnedKeys,
    stop: &Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<()>> {
    (0..keys.writers)
        .map(|writer| {
            spawn_put_get_client(
                Arc::clone(sdk),
                Arc::clone(recorder),
                keys,
                writer,
                Arc::clone(stop),
            )
        })
        .collect()
}

/// Starts the thread of client `writer` (history client id `writer`), which until `stop`
/// puts a new value to each of its own keys in turn and after each put reads the key of
/// the next writer at the same position, which that writer may be writing at that moment.
/// Reads so keep pace with writes, and each key has one writer, which is what
/// [`super::history::assert_final_value`] needs. Every outcome is recorded; an error ends only its
/// operation.
pub fn spawn_put_get_client(
    sdk: Arc<Client>,
    recorder: Arc<Recorder>,
    keys: OwnedKeys,
    writer: u64,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let client = ClientId(writer);
        let mut counter = 0u64;
        while !stop.load(Ordering::Relaxed) {
            counter += 1;
            let index = counter % keys.keys_per_writer;
            // Fixed width, so that no value is a prefix of another, which keeps the
            // checker's search small.
            let value = format!("{writer}-{counter:08}");
            let _ = recorder.put(&sdk, client, keys.key(writer, index), value);
            let peer = (writer + 1) % keys.writers;
            let _ = recorder.get(&sdk, client, keys.key(peer, index));
        }
    })
}
