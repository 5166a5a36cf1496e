//! [`Pipelined`]: one stage of a streaming loop run either inline or on a thread of its own,
//! one item ahead of (or behind) the loop, so that the two overlap.
//!
//! Both pipelines use it for Mimi on the CPU: speech-to-text encodes a frame while the language
//! model steps the previous one, text-to-speech decodes a frame while the language model makes
//! the next one. Mimi's convolutions work mostly on one core and the language model's products
//! on all of them, so a frame then costs about the larger of the two instead of their sum.
//! Results come back in order, so the output is the same as inline; only when each result is
//! handed over changes.

use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

/// A stage turning each input into an output, in order, inline or on its own thread.
pub(crate) enum Pipelined<I, O> {
    Inline(Box<dyn FnMut(I) -> candle_core::Result<O> + Send>),
    Thread {
        inputs: SyncSender<I>,
        outputs: Receiver<candle_core::Result<O>>,
        /// Inputs sent whose outputs are not received yet.
        in_flight: usize,
    },
}

impl<I: Send + 'static, O: Send + 'static> Pipelined<I, O> {
    /// The stage `work`, on a thread of its own when `threaded` (the thread ends when the stage
    /// is dropped), else run by [`push`](Self::push) itself.
    pub(crate) fn new(
        mut work: impl FnMut(I) -> candle_core::Result<O> + Send + 'static,
        threaded: bool,
    ) -> Self {
        if !threaded {
            return Pipelined::Inline(Box::new(work));
        }
        let (inputs, input_rx) = sync_channel::<I>(2);
        let (output_tx, outputs) = sync_channel(2);
        std::thread::spawn(move || {
            for input in input_rx {
                if output_tx.send(work(input)).is_err() {
                    return;
                }
            }
        });
        Pipelined::Thread {
            inputs,
            outputs,
            in_flight: 0,
        }
    }

    /// Submits one input; returns the outputs that must be taken now to keep at most this one
    /// in flight: inline, this input's; on the thread, the previous one's (if any).
    pub(crate) fn push(&mut self, input: I) -> candle_core::Result<Vec<O>> {
        match self {
            Pipelined::Inline(work) => Ok(vec![work(input)?]),
            Pipelined::Thread {
                inputs,
                outputs,
                in_flight,
            } => {
                inputs.send(input).map_err(|_| stopped())?;
                *in_flight += 1;
                let mut out = Vec::new();
                while *in_flight > 1 {
                    out.push(outputs.recv().map_err(|_| stopped())??);
                    *in_flight -= 1;
                }
                Ok(out)
            }
        }
    }

    /// The outputs already there, without waiting.
    pub(crate) fn ready(&mut self) -> candle_core::Result<Vec<O>> {
        let mut out = Vec::new();
        if let Pipelined::Thread {
            outputs, in_flight, ..
        } = self
        {
            while *in_flight > 0 {
                match outputs.try_recv() {
                    Ok(output) => out.push(output?),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Err(stopped()),
                }
                *in_flight -= 1;
            }
        }
        Ok(out)
    }

    /// Every output still to come, in order, waiting for them.
    pub(crate) fn drain(&mut self) -> candle_core::Result<Vec<O>> {
        let mut out = Vec::new();
        if let Pipelined::Thread {
            outputs, in_flight, ..
        } = self
        {
            while *in_flight > 0 {
                out.push(outputs.recv().map_err(|_| stopped())??);
                *in_flight -= 1;
            }
        }
        Ok(out)
    }
}

fn stopped() -> candle_core::Error {
    candle_core::Error::Msg("the pipeline's thread stopped".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_threaded_give_the_same_outputs_in_order() {
        for threaded in [false, true] {
            let mut stage = Pipelined::new(|x: u32| Ok(x * 10), threaded);
            let mut out = Vec::new();
            for x in 0..5 {
                out.extend(stage.push(x).unwrap());
                // At most one input in flight.
                assert!(x as usize + 1 - out.len() <= usize::from(threaded));
            }
            out.extend(stage.ready().unwrap());
            out.extend(stage.drain().unwrap());
            assert_eq!(out, [0, 10, 20, 30, 40], "threaded: {threaded}");
        }
    }

    #[test]
    fn an_error_comes_back_in_its_place() {
        let mut stage = Pipelined::new(
            |x: u32| match x {
                2 => Err(candle_core::Error::Msg("two".into())),
                x => Ok(x),
            },
            true,
        );
        assert!(stage.push(1).unwrap().is_empty());
        assert_eq!(stage.push(2).unwrap(), [1]);
        assert!(stage.push(3).unwrap_err().to_string().contains("two"));
    }
}
