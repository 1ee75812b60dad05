//! Channel logs in memory: the newest frames of each channel under the log
//! lock, which is held while a logged frame is delivered (see the parent
//! module's docs).

use super::MemoryBackend;
use crate::backend::channel_log::window;
use crate::backend::{BackendResult, ChannelLog, Envelope, EventPage, LoggedFrame};
use async_trait::async_trait;

#[async_trait]
impl ChannelLog for MemoryBackend {
    async fn log_publish(
        &self,
        channel: &str,
        frame: &LoggedFrame,
        keep: usize,
    ) -> BackendResult<(u64, usize)> {
        let count = self.lock().interest.get(channel).copied().unwrap_or(0);
        let mut logs = self.logs();
        let log = logs.entry(channel.to_owned()).or_default();
        log.latest += 1;
        let frame = frame.frame(log.latest);
        log.frames.push_back(frame.clone());
        while log.frames.len() > keep {
            log.frames.pop_front();
        }
        let offset = log.latest;
        if count > 0 {
            self.deliver(Envelope::Channel {
                channel: channel.to_owned(),
                frame,
                last: false,
            });
        }
        Ok((offset, count))
    }

    async fn channel_log(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> BackendResult<EventPage> {
        let logs = self.logs();
        let Some(log) = logs.get(channel) else {
            return Ok(EventPage::default());
        };
        let first = log.latest + 1 - log.frames.len() as u64;
        let range = window(log.frames.len(), first, after, limit);
        Ok(EventPage {
            events: log
                .frames
                .range(range.clone())
                .zip(range.start as u64..)
                .map(|(frame, i)| (first + i, frame.clone()))
                .collect(),
            latest: log.latest,
        })
    }

    async fn advance_log(&self, channel: &str, offset: u64) -> BackendResult<()> {
        let mut logs = self.logs();
        let log = logs.entry(channel.to_owned()).or_default();
        if offset > log.latest {
            // The kept frames would no longer be numbered consecutively.
            log.frames.clear();
            log.latest = offset;
        }
        Ok(())
    }
}
