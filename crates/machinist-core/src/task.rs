//! Turning plain Rust functions into registered tasks, axum-style.
//!
//! A task is an `async fn` (or, wrapped in [`blocking`], a plain `fn`) whose parameters are
//! *extractors* and whose return value is a *responder*:
//!
//! * extractors ([`FromTaskArgs`]): any [`FromArg`] type takes the next positional argument
//!   (`i64`, `String`, `Vec<f64>` …); [`Variadic<T>`] takes all remaining ones (Go's
//!   `args ...int64`); [`TaskContext`] takes none and gives the signature, attempt number,
//!   headers and a cancellation token.
//! * responders ([`TaskOutput`]): `()`, one value, a tuple of values, or `Result` of those with
//!   any error type that converts into [`TaskError`].
//!
//! ```
//! use machinist_core::task::{TaskContext, TaskError, Variadic};
//!
//! async fn add(Variadic(xs): Variadic<i64>) -> i64 {
//!     xs.iter().sum()
//! }
//!
//! async fn split(ctx: TaskContext, s: String) -> Result<Vec<String>, TaskError> {
//!     if ctx.is_cancelled() {
//!         return Err(TaskError::fatal("cancelled"));
//!     }
//!     Ok(s.chars().map(String::from).collect())
//! }
//! ```
//!
//! Arguments are decoded before the function runs; a wrong count or type is an [`ArgError`]
//! that names the argument, and the task fails without running.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::arg::{Arg, TaskResult};
use crate::metrics::TaskMetrics;
use crate::signature::{Headers, Signature};
use crate::types::{FromArg, IntoResults, TypeError};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What running a task produced.
pub type TaskOutcome = Result<Vec<TaskResult>, TaskError>;

/// An error returned by a task function. Not a `std::error::Error` itself, so that any error
/// converts into it with `?`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TaskError {
    /// The task failed; it is retried while the signature's `RetryCount` lasts.
    Failed(String),
    /// Run the task again after `after` (Go's `ErrRetryTaskLater`). Does not use up
    /// `RetryCount`; bounded by `Config::max_retry_later`.
    RetryLater {
        /// How long to wait.
        after: Duration,
        /// Why, for logs and the final error if the bound is reached.
        reason: String,
    },
    /// Fail at once, without retries.
    Fatal(String),
}

impl TaskError {
    /// A failure with a message (retried while `RetryCount` lasts).
    pub fn msg(message: impl fmt::Display) -> Self {
        TaskError::Failed(message.to_string())
    }
    /// Asks to run again after `after`.
    pub fn retry_after(after: Duration) -> Self {
        TaskError::RetryLater {
            after,
            reason: format!("retry requested in {after:?}"),
        }
    }
    /// A failure that is never retried.
    pub fn fatal(message: impl fmt::Display) -> Self {
        TaskError::Fatal(message.to_string())
    }
    /// The text stored as the task's `Error`.
    pub fn message(&self) -> &str {
        match self {
            TaskError::Failed(m) | TaskError::Fatal(m) => m,
            TaskError::RetryLater { reason, .. } => reason,
        }
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(e: E) -> Self {
        TaskError::Failed(e.to_string())
    }
}

/// Arguments in a message do not fit the task's parameters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgError {
    /// A parameter has no argument.
    #[error("missing argument #{index} ({expected}): the message has {got} argument(s)")]
    Missing {
        /// 1-based position.
        index: usize,
        /// The Go type the parameter expects.
        expected: &'static str,
        /// How many arguments the message has.
        got: usize,
    },
    /// More arguments than parameters.
    #[error("too many arguments: the task takes {expected}, the message has {got}")]
    TooMany {
        /// How many the task takes.
        expected: usize,
        /// How many the message has.
        got: usize,
    },
    /// An argument of the wrong type or value.
    #[error("argument #{index}{name} ({expected}): {source}")]
    Invalid {
        /// 1-based position.
        index: usize,
        /// `" \"x\""` when the argument carries a `Name`, else empty.
        name: String,
        /// The Go type the parameter expects.
        expected: &'static str,
        /// What is wrong with it.
        source: TypeError,
    },
}

struct ContextInner {
    signature: Signature,
    attempt: u32,
    cancel: CancellationToken,
}

/// What a task may know about its own run. Cheap to clone.
#[derive(Clone)]
pub struct TaskContext {
    inner: Arc<ContextInner>,
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("uuid", &self.inner.signature.uuid)
            .field("name", &self.inner.signature.name)
            .field("attempt", &self.inner.attempt)
            .finish()
    }
}

impl TaskContext {
    /// A context for running `signature` as attempt `attempt` (1 for the first run).
    pub fn new(signature: Signature, attempt: u32, cancel: CancellationToken) -> Self {
        TaskContext {
            inner: Arc::new(ContextInner {
                signature,
                attempt,
                cancel,
            }),
        }
    }
    /// The signature being run.
    pub fn signature(&self) -> &Signature {
        &self.inner.signature
    }
    /// The signature back, without a copy when this is the last handle to the context (the
    /// task did not keep one); otherwise a clone. Lets a caller move its signature into the
    /// context for the run and take it back afterwards instead of cloning it for every task.
    pub fn into_signature(self) -> Signature {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner.signature,
            Err(shared) => shared.signature.clone(),
        }
    }
    /// The task's UUID.
    pub fn uuid(&self) -> &str {
        &self.inner.signature.uuid
    }
    /// The task's name.
    pub fn name(&self) -> &str {
        &self.inner.signature.name
    }
    /// The message headers (trace context and any others).
    pub fn headers(&self) -> Option<&Headers> {
        self.inner.signature.headers.as_ref()
    }
    /// 1 for the first run, 2 for the first retry, and so on (retries and retry-later both
    /// count).
    pub fn attempt(&self) -> u32 {
        self.inner.attempt
    }
    /// Retries left after this run.
    pub fn retries_left(&self) -> i64 {
        self.inner.signature.retry_count
    }
    /// Fires when the task should stop: time limit reached or the worker aborting.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.inner.cancel
    }
    /// True once [`TaskContext::cancellation`] fired.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }
}

/// Positional arguments being handed out to a task's parameters.
#[derive(Debug)]
pub struct ArgCursor<'a> {
    ctx: &'a TaskContext,
    args: &'a [Arg],
    next: usize,
}

impl<'a> ArgCursor<'a> {
    /// A cursor at the first of `args`.
    pub fn new(ctx: &'a TaskContext, args: &'a [Arg]) -> Self {
        ArgCursor { ctx, args, next: 0 }
    }
    /// The run's context.
    pub fn context(&self) -> &'a TaskContext {
        self.ctx
    }
    /// Decodes the next argument as `T`.
    pub fn take<T: FromArg>(&mut self) -> Result<T, ArgError> {
        let index = self.next + 1;
        let Some(arg) = self.args.get(self.next) else {
            return Err(ArgError::Missing {
                index,
                expected: T::GO_TYPE,
                got: self.args.len(),
            });
        };
        self.next += 1;
        T::from_arg(&arg.type_name, &arg.value).map_err(|source| ArgError::Invalid {
            index,
            name: if arg.name.is_empty() {
                String::new()
            } else {
                format!(" {:?}", arg.name)
            },
            expected: T::GO_TYPE,
            source,
        })
    }
    /// How many arguments are left.
    pub fn remaining(&self) -> usize {
        self.args.len() - self.next
    }
    /// Fails if any argument is left over.
    pub fn finish(&self) -> Result<(), ArgError> {
        if self.next < self.args.len() {
            return Err(ArgError::TooMany {
                expected: self.next,
                got: self.args.len(),
            });
        }
        Ok(())
    }
}

/// A task parameter: how it is taken from the message.
pub trait FromTaskArgs: Sized {
    /// Takes this parameter's value from the cursor.
    fn from_task_args(args: &mut ArgCursor<'_>) -> Result<Self, ArgError>;
}

impl<T: FromArg> FromTaskArgs for T {
    fn from_task_args(args: &mut ArgCursor<'_>) -> Result<Self, ArgError> {
        args.take()
    }
}

impl FromTaskArgs for TaskContext {
    fn from_task_args(args: &mut ArgCursor<'_>) -> Result<Self, ArgError> {
        Ok(args.context().clone())
    }
}

/// All remaining arguments, each as `T`: Go's variadic `args ...int64`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Variadic<T>(pub Vec<T>);

impl<T: FromArg> FromTaskArgs for Variadic<T> {
    fn from_task_args(args: &mut ArgCursor<'_>) -> Result<Self, ArgError> {
        let mut out = Vec::with_capacity(args.remaining());
        while args.remaining() > 0 {
            out.push(args.take()?);
        }
        Ok(Variadic(out))
    }
}

/// What a task function may return.
pub trait TaskOutput {
    /// The results, or the task's error.
    fn into_outcome(self) -> TaskOutcome;
}

impl<T: IntoResults> TaskOutput for T {
    fn into_outcome(self) -> TaskOutcome {
        self.into_results().map_err(TaskError::fatal)
    }
}

impl<T: IntoResults, E: Into<TaskError>> TaskOutput for Result<T, E> {
    fn into_outcome(self) -> TaskOutcome {
        match self {
            Ok(v) => v.into_results().map_err(TaskError::fatal),
            Err(e) => Err(e.into()),
        }
    }
}

/// A function that can be registered as a task. `M` is a marker that tells the parameter
/// list apart; users never name it.
pub trait Handler<M>: Clone + Send + Sync + 'static {
    /// Decodes the arguments, then returns the future that runs the task.
    fn call(&self, ctx: TaskContext, args: &[Arg]) -> Result<BoxFuture<TaskOutcome>, ArgError>;
}

/// Marker for `async fn` handlers.
#[derive(Debug)]
pub struct AsyncMarker;
/// Marker for [`blocking`] handlers.
#[derive(Debug)]
pub struct BlockingMarker;

/// Wraps a plain (synchronous) function as a task; it runs on tokio's blocking thread pool.
pub fn blocking<F>(f: F) -> Blocking<F> {
    Blocking(f)
}

/// A synchronous function registered with [`blocking`].
#[derive(Debug, Clone, Copy)]
pub struct Blocking<F>(pub F);

macro_rules! impl_handler {
    ($($t:ident),*) => {
        #[allow(non_snake_case, unused_variables, unused_mut)]
        impl<F, Fut, R, $($t,)*> Handler<(AsyncMarker, $($t,)*)> for F
        where
            F: Fn($($t),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: TaskOutput,
            $($t: FromTaskArgs + Send + 'static,)*
        {
            fn call(&self, ctx: TaskContext, args: &[Arg]) -> Result<BoxFuture<TaskOutcome>, ArgError> {
                let mut cursor = ArgCursor::new(&ctx, args);
                $(let $t = $t::from_task_args(&mut cursor)?;)*
                cursor.finish()?;
                // Called inside the future, so nothing of the handler runs before the worker
                // has stored STARTED, and a panic in a closure's synchronous part is caught by
                // the worker's panic guard like one in its future.
                let f = self.clone();
                Ok(Box::pin(async move { f($($t),*).await.into_outcome() }))
            }
        }

        #[allow(non_snake_case, unused_variables, unused_mut)]
        impl<F, R, $($t,)*> Handler<(BlockingMarker, $($t,)*)> for Blocking<F>
        where
            F: Fn($($t),*) -> R + Clone + Send + Sync + 'static,
            R: TaskOutput + Send + 'static,
            $($t: FromTaskArgs + Send + 'static,)*
        {
            fn call(&self, ctx: TaskContext, args: &[Arg]) -> Result<BoxFuture<TaskOutcome>, ArgError> {
                let mut cursor = ArgCursor::new(&ctx, args);
                $(let $t = $t::from_task_args(&mut cursor)?;)*
                cursor.finish()?;
                let f = self.0.clone();
                Ok(Box::pin(async move {
                    match tokio::task::spawn_blocking(move || f($($t),*).into_outcome()).await {
                        Ok(outcome) => outcome,
                        // Re-raise the panic so the worker's panic guard reports its text.
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(e) => Err(TaskError::Failed(e.to_string())),
                    }
                }))
            }
        }
    };
}

impl_handler!();
impl_handler!(T1);
impl_handler!(T1, T2);
impl_handler!(T1, T2, T3);
impl_handler!(T1, T2, T3, T4);
impl_handler!(T1, T2, T3, T4, T5);
impl_handler!(T1, T2, T3, T4, T5, T6);
impl_handler!(T1, T2, T3, T4, T5, T6, T7);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12);

/// A handler with its parameter types erased, as the registry stores it.
pub trait ErasedHandler: Send + Sync + 'static {
    /// See [`Handler::call`].
    fn call(&self, ctx: TaskContext, args: &[Arg]) -> Result<BoxFuture<TaskOutcome>, ArgError>;
}

struct Erased<H, M> {
    handler: H,
    _marker: std::marker::PhantomData<fn() -> M>,
}

impl<H: Handler<M>, M: 'static> ErasedHandler for Erased<H, M> {
    fn call(&self, ctx: TaskContext, args: &[Arg]) -> Result<BoxFuture<TaskOutcome>, ArgError> {
        self.handler.call(ctx, args)
    }
}

/// A registered task: the erased handler plus per-task options.
#[derive(Clone)]
pub struct Task {
    pub(crate) handler: Arc<dyn ErasedHandler>,
    pub(crate) time_limit: Option<Duration>,
    /// The task's metric handles, resolved on its first run under the name it is registered
    /// with ([`Task::metrics`]); each registration gets a fresh cell.
    pub(crate) metrics: Arc<OnceLock<TaskMetrics>>,
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("time_limit", &self.time_limit)
            .finish_non_exhaustive()
    }
}

impl Task {
    /// A task from any handler (`async fn`, or `blocking(fn)`).
    pub fn new<H: Handler<M>, M: 'static>(handler: H) -> Self {
        Task {
            handler: Arc::new(Erased {
                handler,
                _marker: std::marker::PhantomData,
            }),
            time_limit: None,
            metrics: Arc::default(),
        }
    }

    /// A time limit for this task, overriding `Config::task_time_limit`.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// The task's metric handles (see [`TaskMetrics`]), labelled `name`, the name it is
    /// registered under.
    pub(crate) fn metrics(&self, name: &str) -> &TaskMetrics {
        self.metrics.get_or_init(|| TaskMetrics::new(name))
    }

    /// The same task with its own, empty metrics cell: what the registry stores, so that a
    /// task registered under two names counts under each.
    pub(crate) fn registered(mut self) -> Self {
        self.metrics = Arc::default();
        self
    }

    /// Decodes `args` and returns the future that runs the task.
    pub fn call(&self, ctx: TaskContext, args: &[Arg]) -> Result<BoxFuture<TaskOutcome>, ArgError> {
        self.handler.call(ctx, args)
    }
}

/// Shorthand for [`Task::new`].
pub fn task<H: Handler<M>, M: 'static>(handler: H) -> Task {
    Task::new(handler)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn into_signature_moves_when_unique_and_clones_when_shared() {
        let sig = Signature::new("t").args((1i64, "x"));
        let ctx = TaskContext::new(sig.clone(), 1, CancellationToken::new());
        let name_ptr = ctx.signature().name.as_ptr();
        let back = ctx.into_signature();
        assert_eq!(back, sig);
        // Moved out, not copied: the same heap buffer.
        assert_eq!(back.name.as_ptr(), name_ptr);

        let ctx = TaskContext::new(sig.clone(), 2, CancellationToken::new());
        let kept = ctx.clone();
        let back = ctx.into_signature();
        assert_eq!(back, sig);
        assert_eq!(kept.signature(), &sig);
        assert_eq!(kept.attempt(), 2);
    }
}
