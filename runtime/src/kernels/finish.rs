//! The output stage's forms, chosen once per block of channels: TFLite's exact steps
//! for any accumulator, or the small-accumulator form ([`OutputStage::finish_small`])
//! with the stage's clamp or, where the clamp is int8's whole range (every layer of
//! the MLPerf Tiny models), a single saturation. Kernels run their output loops once
//! per form ([`by_finish!`]), so no output pays for the choice.

use super::{ChannelQuant, OutputStage};

/// How a block of channels finishes its accumulators
/// ([`OutputStage::small_channels_into`] decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// [`OutputStage::finish`]: any accumulator.
    Exact,
    /// [`OutputStage::finish_small`], clamped to the stage's range.
    Small,
    /// [`OutputStage::finish_small`] whose clamp is int8's whole range: one
    /// saturation instead of two compares (vww_96_int8 4.6 % fewer Cortex-M4
    /// instructions, person_detect 5.6 %).
    SmallFullRange,
}

/// One form as a type, so that a loop written once is compiled once per form.
pub(crate) trait Finisher {
    /// The output of channel `q`'s accumulator `acc`.
    fn finish(&self, q: &ChannelQuant, acc: i32) -> i8;
}

/// [`Finish::Exact`].
pub(crate) struct ExactFinish<'s, 'a>(pub &'s OutputStage<'a>);

impl Finisher for ExactFinish<'_, '_> {
    #[inline(always)]
    fn finish(&self, q: &ChannelQuant, acc: i32) -> i8 {
        self.0.finish(q, acc)
    }
}

/// [`Finish::Small`] (`FULL_RANGE` false) and [`Finish::SmallFullRange`].
pub(crate) struct SmallFinish<'s, 'a, const FULL_RANGE: bool>(pub &'s OutputStage<'a>);

impl<const FULL_RANGE: bool> Finisher for SmallFinish<'_, '_, FULL_RANGE> {
    #[inline(always)]
    fn finish(&self, q: &ChannelQuant, acc: i32) -> i8 {
        self.0.finish_small::<FULL_RANGE>(q, acc)
    }
}

/// `$body` with `$f` bound to the [`Finisher`] of `$form` for `$stage`: one copy of
/// `$body` per form, the form matched once, outside it.
macro_rules! by_finish {
    ($form:expr, $stage:expr, |$f:ident| $body:expr) => {
        match $form {
            $crate::kernels::finish::Finish::Exact => {
                let $f = $crate::kernels::finish::ExactFinish($stage);
                $body
            }
            $crate::kernels::finish::Finish::Small => {
                let $f = $crate::kernels::finish::SmallFinish::<false>($stage);
                $body
            }
            $crate::kernels::finish::Finish::SmallFullRange => {
                let $f = $crate::kernels::finish::SmallFinish::<true>($stage);
                $body
            }
        }
    };
}
pub(crate) use by_finish;
